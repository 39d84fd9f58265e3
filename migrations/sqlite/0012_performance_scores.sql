-- Verdict scores in each agent's record per task type: how many outcomes
-- carried a verdict (the gates' CAWS score, 0 to 100, after the judges) and
-- their sum, so the mean verdict score is score_sum / scored. Lapsed claims
-- carry no verdict.
ALTER TABLE agent_performance ADD COLUMN scored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agent_performance ADD COLUMN score_sum REAL NOT NULL DEFAULT 0;

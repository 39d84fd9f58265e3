-- SQLite's 0012_performance_scores: verdict scores in each agent's record.
ALTER TABLE agent_performance ADD COLUMN scored BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agent_performance ADD COLUMN score_sum DOUBLE PRECISION NOT NULL DEFAULT 0;

-- A routing decision's candidates as one JSON array on the decision (eligible
-- best first with their scores, then the excluded with why: CandidateScore),
-- instead of one routing_scores row each: with 100 agents that was 100 rows
-- per task_submit. routing_scores keeps older decisions' rows (candidates
-- NULL) and gets no new ones.
ALTER TABLE routing_decisions ADD COLUMN candidates TEXT;

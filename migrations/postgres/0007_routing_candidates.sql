-- SQLite's 0013_routing_candidates: a decision's candidates as one JSON array
-- on the decision; routing_scores keeps older decisions' rows only.
ALTER TABLE routing_decisions ADD COLUMN candidates TEXT;

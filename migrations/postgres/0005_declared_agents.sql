-- SQLite's 0011_declared_agents: agents declared in the policy
-- (`tasks.agents`), with when the declaring policy was loaded. Rows are
-- never deleted: an agent dropped from the policy before it ever called
-- keeps its row with declared_at NULL and last_seen_at 0, and is hidden.
ALTER TABLE agents ADD COLUMN declared_at BIGINT;

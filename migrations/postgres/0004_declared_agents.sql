-- SQLite's 0011_declared_agents: agents declared in the policy
-- (`tasks.agents`), with when the declaring policy was loaded. An agent
-- dropped from the policy that never called is deleted.
ALTER TABLE agents ADD COLUMN declared_at BIGINT;
GRANT DELETE ON agents TO arbiter_app;

-- Agents declared in the policy (`tasks.agents`): when the policy declaring
-- the agent was loaded (server start or reload); NULL for agents known only
-- from agent_register. Routing counts a declared agent as seen at that time.
-- A declared agent that has never called has last_seen_at 0.
ALTER TABLE agents ADD COLUMN declared_at INTEGER;

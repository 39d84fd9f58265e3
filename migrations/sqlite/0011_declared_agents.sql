-- Agents declared in the policy (`tasks.agents`): when the policy declaring
-- the agent was loaded (server start or reload); NULL for agents known only
-- from agent_register. Routing counts a declared agent as seen at that time.
-- A declared agent that has never called has last_seen_at 0. Rows are never
-- deleted: one dropped from the policy before it ever called keeps its row
-- with declared_at NULL and last_seen_at 0, and is hidden (not listed, not
-- routed to, not registered) until it calls agent_register or is declared
-- again.
ALTER TABLE agents ADD COLUMN declared_at INTEGER;

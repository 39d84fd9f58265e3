-- What a token may do: `agent` tokens speak MCP at /mcp; `admin` tokens are
-- for people, at /admin (deciding override requests), and never at /mcp, so
-- the token that asked for an exception can never be the one that grants it.
ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'agent' CHECK (role IN ('agent', 'admin'));

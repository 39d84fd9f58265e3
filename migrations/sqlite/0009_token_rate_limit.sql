-- A token's own request limit of the HTTP server (`N/s`, `N/min`, `N/h` or
-- `off`), set by `arbiter token create --rate-limit`; NULL: the server's
-- (`serve --rate-limit`). Counting happens in the server's memory.
ALTER TABLE api_tokens ADD COLUMN rate_limit TEXT;

-- Who placed each order: the caller's subject (the gateway's token `sub`), empty for
-- orders placed without a named caller (authentication off, or before this migration).
-- Request ids, the callers' idempotency keys, are scoped by it: one caller can neither
-- replay another's order nor learn that another's key exists.
ALTER TABLE orders ADD COLUMN placed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE orders DROP CONSTRAINT orders_request_id_key;
ALTER TABLE orders ADD CONSTRAINT orders_placed_by_request_id_key UNIQUE (placed_by, request_id);

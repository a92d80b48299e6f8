-- Who runs the saga of a pending order, and until when: an orders process that dies
-- mid-saga leaves its order PENDING, and another process (or the restarted one) resumes
-- it once the claim has lapsed. A running saga renews its claim; NULL means no process
-- claimed the order since it was created (its creator runs it, renewing only a long saga).
ALTER TABLE orders
    ADD COLUMN saga_owner         TEXT,
    ADD COLUMN saga_claimed_until TIMESTAMPTZ;

-- What the resumer scans: the pending orders, oldest first.
CREATE INDEX orders_pending_position ON orders (position) WHERE status = 'pending';

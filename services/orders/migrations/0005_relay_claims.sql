-- The relay claims the events it publishes with a lease, in a statement of its own, and
-- marks them sent in another: no transaction stays open while the broker answers. A
-- relay that dies mid-publication leaves a lease that lapses, and another relay (any
-- replica) publishes those events again: delivery stays at least once, de-duplicated
-- by event id.
ALTER TABLE outbox
    ADD COLUMN relay_claim         TEXT,
    ADD COLUMN relay_claimed_until TIMESTAMPTZ;


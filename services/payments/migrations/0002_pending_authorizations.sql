-- A charge is recorded before its card is authorized ('pending'), and claimed by the
-- one caller that authorizes it: a card is authorized at most once per request_id, and
-- an authorization a dead process started is resumed by another (domain.rs).

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'captured', 'declined', 'refunded'));

-- What resuming needs, kept only while pending.
ALTER TABLE payments ADD COLUMN card_token TEXT;
-- The claim of the caller authorizing it; past it, any replica may take it over.
ALTER TABLE payments ADD COLUMN claimed_until TIMESTAMPTZ;
-- A refund asked for while pending, applied when the authorization ends.
ALTER TABLE payments ADD COLUMN refund_reason TEXT;

-- Pending payments whose claim expired: what the resumer looks for.
CREATE INDEX payments_pending_claimed_until ON payments (claimed_until)
    WHERE status = 'pending';

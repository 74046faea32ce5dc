-- 0008_b2b_receipt_timeout.sql
-- Every outbound order event is answered by a receipt (migration 0004); this closes the loop
-- for the events that never are: lost by the broker, or expired past its retention before the
-- destination read them, when nothing later of the same order is held behind them for the
-- destination to notice the gap. What it guarantees:
--   * a published event that expects a receipt (every module but `b2b`: receipts and resync
--     requests are never answered) carries `receipt_due_at`, set each time it is published;
--   * the sidecar sends again, under a new message id, a `published` event whose
--     `receipt_due_at` has passed (`resends` counts it, and doubles the next wait, up to a cap)
--     when the destination has answered a later event of the same stream (it read past this
--     one), or when it is the newest unanswered event to that destination in its stream (the
--     probe: a destination that is only offline or behind gets one copy, not one per event);
--   * a receipt moves the row to `acknowledged` or `rejected`, out of the first partial index
--     below, so finding the overdue rows stays cheap however long the outbox history grows; the
--     second finds how far each destination has answered without scanning that history.

ALTER TABLE b2b_events
    ADD COLUMN receipt_due_at timestamptz,
    ADD COLUMN resends integer NOT NULL DEFAULT 0 CHECK (resends >= 0);

CREATE INDEX b2b_events_receipt_due_idx ON b2b_events (receipt_due_at)
    WHERE status = 'published' AND receipt_due_at IS NOT NULL;
CREATE INDEX b2b_events_answered_idx ON b2b_events (dest_tenant, module, id)
    WHERE status IN ('acknowledged', 'rejected');

-- Events published before this migration and still unanswered get their first re-send now.
UPDATE b2b_events SET receipt_due_at = now() WHERE status = 'published' AND module <> 'b2b';

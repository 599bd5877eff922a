-- Long polls (GET /v1/access-requests/:id?waitFor=…, and a decision that arrives before its
-- stage is open) wait for this notification instead of polling. The payload is the request's
-- id only: no personal data leaves the row. Sent at commit, so a waiter that wakes reads the
-- committed change.
CREATE OR REPLACE FUNCTION accessloop_notify_request_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'access_request' THEN
    PERFORM pg_notify('access_request_changed', NEW.id::text);
  ELSE
    PERFORM pg_notify('access_request_changed', NEW.request_id::text);
  END IF;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER access_request_status_changed AFTER UPDATE OF status ON access_request
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION accessloop_notify_request_changed();
--> statement-breakpoint
-- One notification per statement would do for a stage's rows, but a row trigger keeps one function for both.
CREATE TRIGGER approval_stage_opened AFTER INSERT ON approval
  FOR EACH ROW EXECUTE FUNCTION accessloop_notify_request_changed();

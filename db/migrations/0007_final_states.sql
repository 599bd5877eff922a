-- Final states are final (issue 11): a request or grant that ended is never reopened, whoever
-- writes. The activities skip such writes themselves (activities/lease-context.ts,
-- FINAL_*_STATES); this is the backstop for a late attempt, a new code path or a hand-written
-- UPDATE. 23514 (check_violation) is a non-retryable database error to the activities.
CREATE FUNCTION "accessloop_final_state_guard"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status::text = ANY (TG_ARGV) AND NEW.status IS DISTINCT FROM OLD.status THEN
    RAISE EXCEPTION USING ERRCODE = '23514', MESSAGE = format('%s %s is %s, a final state', TG_TABLE_NAME, OLD.id, OLD.status);
  END IF;
  RETURN NEW;
END $$;--> statement-breakpoint
CREATE TRIGGER "grant_final_state" BEFORE UPDATE OF "status" ON "grant" FOR EACH ROW EXECUTE FUNCTION "accessloop_final_state_guard"('revoked', 'failed');--> statement-breakpoint
CREATE TRIGGER "access_request_final_state" BEFORE UPDATE OF "status" ON "access_request" FOR EACH ROW EXECUTE FUNCTION "accessloop_final_state_guard"('rejected', 'expired_unapproved', 'cancelled', 'revoked', 'failed');

ALTER TYPE "public"."finding_kind" ADD VALUE 'ticket_closed';--> statement-breakpoint
ALTER TYPE "public"."finding_kind" ADD VALUE 'ticket_missing';--> statement-breakpoint
ALTER TYPE "public"."revoke_reason" ADD VALUE 'ticket';--> statement-breakpoint
ALTER TABLE "service_desk" ADD COLUMN "reached_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "service_desk" ADD COLUMN "failing_since" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "service_desk" ADD COLUMN "last_error_type" text;--> statement-breakpoint
ALTER TABLE "service_desk" ADD COLUMN "alerted_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "ticket_link" ADD COLUMN "ticket_created_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "ticket_link" ADD COLUMN "final_state" text;
CREATE TYPE "public"."hr_event_type" AS ENUM('joiner', 'mover', 'leaver', 'rehire', 'update');--> statement-breakpoint
CREATE TABLE "hr_event" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"webhook_id" text NOT NULL,
	"source_client" text NOT NULL,
	"type" "hr_event_type" NOT NULL,
	"worker_id" text NOT NULL,
	"sequence" bigint NOT NULL,
	"effective_at" timestamp with time zone NOT NULL,
	"payload" jsonb NOT NULL,
	"identity_id" uuid NOT NULL,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	"processed_at" timestamp with time zone,
	"outcome" text,
	"completed_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "identity" ADD COLUMN "job_code" text;--> statement-breakpoint
ALTER TABLE "identity" ADD COLUMN "hr_sequence" bigint;--> statement-breakpoint
ALTER TABLE "identity" ADD COLUMN "terminated_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "hr_event" ADD CONSTRAINT "hr_event_identity_id_identity_id_fk" FOREIGN KEY ("identity_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "hr_event_webhook_uq" ON "hr_event" USING btree ("webhook_id");--> statement-breakpoint
CREATE INDEX "hr_event_identity_idx" ON "hr_event" USING btree ("identity_id");
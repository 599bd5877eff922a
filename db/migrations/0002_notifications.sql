CREATE TABLE "action_link_use" (
	"jti" text PRIMARY KEY NOT NULL,
	"request_id" uuid NOT NULL,
	"approver_id" uuid NOT NULL,
	"used_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "notification" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"idempotency_key" text NOT NULL,
	"event" text NOT NULL,
	"request_id" uuid,
	"stage" integer,
	"recipient_ids" jsonb NOT NULL,
	"channel" text NOT NULL,
	"status" text NOT NULL,
	"last_error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"delivered_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "notification" ADD CONSTRAINT "notification_request_id_access_request_id_fk" FOREIGN KEY ("request_id") REFERENCES "public"."access_request"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "notification_idempotency_uq" ON "notification" USING btree ("idempotency_key");--> statement-breakpoint
CREATE INDEX "notification_request_idx" ON "notification" USING btree ("request_id");
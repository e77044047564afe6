-- Idempotency records are begun (in progress, no response yet) with a
-- command's first events and completed with the response of the request
-- that executed it (issue 12): NULL response = in progress.
ALTER TABLE idempotency ALTER COLUMN response DROP NOT NULL;

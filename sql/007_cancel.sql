-- `reproject cancel`: a request, from any terminal or machine, that a running rebuild stop
-- after its current batch. The run polls it between batches.
ALTER TABLE reproject.runs ADD COLUMN cancel_requested_at timestamptz;
ALTER TABLE reproject.runs ADD COLUMN cancel_requested_by text;

-- Shard schema v4: a request id belongs to the caller who sent it (AIP-155). Before, a claim
-- was keyed by business, location and request id only, so a second caller who sent the same
-- request id (guessed, leaked or by accident) was answered with the first caller's resource,
-- even one it may not read. The claim now also names the caller (the token's subject) and a
-- replay is answered only to that caller; another caller's same id is a new request.
--
-- Claims made before this version have no caller (''): no caller matches them, so a retry
-- that straddles the upgrade creates anew (as a retry after the 24 h window does); they are
-- purged as they expire. Answering them to whoever asks would keep the hole open a day.
ALTER TABLE request_ids ADD COLUMN requester text NOT NULL DEFAULT '';
ALTER TABLE request_ids DROP CONSTRAINT request_ids_pkey;
ALTER TABLE request_ids ADD PRIMARY KEY (business_id, location_id, requester, request_id);

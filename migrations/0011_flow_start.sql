-- The start of the flow whose counters a flow_state row holds (conntrack's CTA_TIMESTAMP
-- start, ns since the epoch; NULL when the kernel gave none: nf_conntrack_timestamp off,
-- a row made by a NEW event, and every row before schema 11). Conntrack's id is a hash of
-- the entry's address and tuple: a new connection on the same tuple, in the memory of the
-- entry it replaced, comes back under the same key. The start tells the two apart, so a
-- pass never charges one flow's counters against the other's. Append-only: never edit a
-- shipped migration.
ALTER TABLE flow_state ADD COLUMN start_ns INTEGER;

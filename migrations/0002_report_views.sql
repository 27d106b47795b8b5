-- Views for reports and for people who query the database directly (issue: reports).
-- Column names follow the CLI's JSON. Periods are UTC; the CLI shows local time.

-- Traffic per user and remote address per UTC day, biggest first within a day when ordered
-- by rx_bytes + tx_bytes. Unattributed traffic has uid NULL; excluded local traffic is left out.
CREATE VIEW top_remotes_daily AS
SELECT strftime('%Y-%m-%d', u.ts, 'unixepoch') AS period,
       u.uid                                   AS uid,
       n.name                                  AS user,
       u.remote_addr                           AS remote,
       sum(u.rx_bytes)                         AS rx_bytes,
       sum(u.tx_bytes)                         AS tx_bytes,
       sum(u.rx_packets)                       AS rx_packets,
       sum(u.tx_packets)                       AS tx_packets
FROM usage u LEFT JOIN users n ON n.uid = u.uid
WHERE u.kind <> 'excluded'
GROUP BY period, u.uid, u.remote_addr;

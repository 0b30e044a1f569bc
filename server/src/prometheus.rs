//! [`Metrics`] in the Prometheus text exposition format (version 0.0.4): what an admin
//! endpoint serves at `/metrics`.
//!
//! Written here rather than with the `prometheus-client` crate: that crate emits
//! OpenMetrics (counter families named without `_total`, `# EOF`), which Prometheus 2.x's
//! text parser and `promtool check metrics` read as different families, and its metric
//! types are atomics we would only copy our snapshot into. The format is small: `# HELP`
//! and `# TYPE` before each family, every sample of a family together, label values and
//! help text escaped, `+Inf` for the last histogram bucket. The tests check the output
//! with `promtool check metrics`.

use std::fmt::Write;
use std::time::UNIX_EPOCH;

use crate::metrics::{Metrics, ShardMetrics};

/// The `Content-Type` of [`Metrics::to_prometheus`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// The snapshot in the Prometheus text format, every metric named `peerd_*`, per-shard
    /// series labelled `shard`. The README lists the metrics.
    pub fn to_prometheus(&self) -> String {
        let mut w = Writer(String::with_capacity(16 * 1024));
        self.server_wide(&mut w);
        self.per_shard(&mut w);
        w.0
    }

    fn server_wide(&self, w: &mut Writer) {
        let gauge = |w: &mut Writer, name: &str, help: &str, v: f64| {
            w.family(name, "gauge", help);
            w.sample(name, &[], v);
        };
        gauge(
            w,
            "peerd_ready",
            "1 while the server accepts connections; 0 while it drains or after it closed.",
            if self.ready { 1.0 } else { 0.0 },
        );
        let started = self
            .started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        gauge(
            w,
            "peerd_start_time_seconds",
            "When the server started, in seconds since the Unix epoch.",
            started,
        );
        gauge(
            w,
            "peerd_shards",
            "Shards (executor threads) that answered this scrape.",
            self.shards.len() as f64,
        );
        gauge(
            w,
            "peerd_scrape_missing_shards",
            "Shards that did not answer this scrape in time (their series are missing).",
            self.missing_shards.len() as f64,
        );
        gauge(
            w,
            "peerd_max_connections",
            "The connection limit in force.",
            self.max_connections as f64,
        );
        gauge(
            w,
            "peerd_peers",
            "Handshaken peers in the directory, all shards.",
            self.peers as f64,
        );
        gauge(
            w,
            "peerd_topics",
            "Topics with members or presence watchers, all shards.",
            self.topics as f64,
        );
        w.family(
            "peerd_accept_errors_total",
            "counter",
            "accept(2) failures (EMFILE and the like), all shards.",
        );
        w.sample("peerd_accept_errors_total", &[], self.accept_errors);
        if let Some(c) = &self.cluster {
            gauge(
                w,
                "peerd_cluster_up",
                "1 while this node is linked to NATS and in sync with its cluster.",
                if c.up { 1.0 } else { 0.0 },
            );
            gauge(
                w,
                "peerd_cluster_nodes",
                "Nodes alive in the cluster, this one included.",
                c.nodes as f64,
            );
            let gauges: [(&str, &str, u64); 4] = [
                (
                    "peerd_cluster_remote_peers",
                    "Peers of other nodes in this node's replica.",
                    c.remote_peers,
                ),
                (
                    "peerd_cluster_remote_members",
                    "Topic memberships of other nodes' peers in this node's replica.",
                    c.remote_members,
                ),
                (
                    "peerd_cluster_subscriptions",
                    "Topic subjects this node subscribes to (topics with a local member).",
                    c.subscriptions,
                ),
                (
                    "peerd_cluster_claims",
                    "Peer ids this node holds in the cluster's id bucket.",
                    c.claims,
                ),
            ];
            for (name, help, v) in gauges {
                gauge(w, name, help, v as f64);
            }
            let counters: [(&str, &str, u64); 14] = [
                (
                    "peerd_cluster_messages_out_total",
                    "Messages this node published to NATS.",
                    c.messages_out,
                ),
                (
                    "peerd_cluster_messages_in_total",
                    "Messages this node received from NATS.",
                    c.messages_in,
                ),
                (
                    "peerd_cluster_bytes_out_total",
                    "Bytes this node published to NATS.",
                    c.bytes_out,
                ),
                (
                    "peerd_cluster_bytes_in_total",
                    "Bytes this node received from NATS.",
                    c.bytes_in,
                ),
                (
                    "peerd_cluster_topic_messages_in_total",
                    "Topic messages received from other nodes.",
                    c.topic_messages_in,
                ),
                (
                    "peerd_cluster_dropped_total",
                    "Cross-node messages not sent (link down, backlog full) or dropped by NATS.",
                    c.dropped,
                ),
                (
                    "peerd_cluster_malformed_total",
                    "Messages from other nodes that could not be read.",
                    c.malformed,
                ),
                (
                    "peerd_cluster_resyncs_total",
                    "Snapshots asked of other nodes (new node, gap, link back).",
                    c.resyncs,
                ),
                (
                    "peerd_cluster_nodes_lost_total",
                    "Nodes declared dead or that left.",
                    c.nodes_lost,
                ),
                (
                    "peerd_cluster_link_changes_total",
                    "Times the link to NATS went down or came back.",
                    c.link_changes,
                ),
                (
                    "peerd_cluster_rejoins_total",
                    "Times this node rejoined under a new epoch (the cluster had declared it gone).",
                    c.rejoins,
                ),
                (
                    "peerd_cluster_ids_lost_total",
                    "Local peers closed as replaced: their id was claimed elsewhere while this node was cut off.",
                    c.ids_lost,
                ),
                (
                    "peerd_cluster_ids_reaped_total",
                    "Ids of dead nodes' peers this node deleted from the id bucket.",
                    c.ids_reaped,
                ),
                (
                    "peerd_cluster_rejoins_asked_total",
                    "Messages from node incarnations declared gone, answered with 'rejoin'.",
                    c.rejoins_asked,
                ),
            ];
            for (name, help, v) in counters {
                w.family(name, "counter", help);
                w.sample(name, &[], v);
            }
        }
    }

    fn per_shard(&self, w: &mut Writer) {
        // Each family is written whole (the format wants a family's samples together),
        // shard by shard.
        type Labelled = fn(&ShardMetrics) -> Vec<(String, u64)>;
        let families: [(&str, &str, &str, &str, Labelled); 8] = [
            (
                "peerd_connections",
                "gauge",
                "transport",
                "Open connections (admitted, handshaking included), by transport.",
                |s| {
                    s.connections
                        .iter()
                        .map(|(t, n)| (t.name().into(), *n))
                        .collect()
                },
            ),
            (
                "peerd_connections_accepted_total",
                "counter",
                "transport",
                "Sockets accepted, by transport (those dropped or rejected after included).",
                |s| {
                    s.accepted
                        .iter()
                        .map(|(t, n)| (t.name().into(), *n))
                        .collect()
                },
            ),
            (
                "peerd_connections_welcomed_total",
                "counter",
                "transport",
                "Connections that completed the handshake (Welcome sent), by transport.",
                |s| {
                    s.welcomed
                        .iter()
                        .map(|(t, n)| (t.name().into(), *n))
                        .collect()
                },
            ),
            (
                "peerd_connections_rejected_total",
                "counter",
                "reason",
                "Connections that did not complete the handshake, by reason: the code name of \
                 the Reject sent, handshake_timeout, http_<status> for a refused WebSocket \
                 upgrade, disconnected (the peer left first, or its TLS handshake failed), \
                 tls_session (no TLS session could be made).",
                |s| s.rejected.clone(),
            ),
            (
                "peerd_connections_dropped_total",
                "counter",
                "reason",
                "Sockets refused before any handshake, by reason: max_connections, \
                 out_of_fds, shutdown.",
                |s| s.dropped.clone(),
            ),
            (
                "peerd_closes_total",
                "counter",
                "code",
                "Handshaken connections closed, by close code name (app: 4000-4999, other: \
                 any other undefined code).",
                |s| s.closes.clone(),
            ),
            (
                "peerd_slow_consumer_closes_total",
                "counter",
                "reason",
                "Peers closed as slow consumers, by reason: queue_limit (their outbound \
                 queue passed its limit) or memory_budget (among the largest queues when \
                 the shard passed its memory budget).",
                |s| s.slow_consumer_closes.clone(),
            ),
            (
                "peerd_auth_failures_total",
                "counter",
                "reason",
                "Credentials refused, by reason (refused: the authenticator said no).",
                |s| s.auth_failures.clone(),
            ),
        ];
        for (name, kind, label, help, get) in families {
            w.family(name, kind, help);
            // Open-ended labels: every shard lists every value any shard has, so the
            // series set is the same on each.
            let mut values: Vec<String> = Vec::new();
            for s in &self.shards {
                for (v, _) in get(s) {
                    if !values.contains(&v) {
                        values.push(v);
                    }
                }
            }
            for s in &self.shards {
                let got = get(s);
                let shard = s.shard.to_string();
                for v in &values {
                    let n = got.iter().find(|(k, _)| k == v).map_or(0, |(_, n)| *n);
                    w.sample(name, &[("shard", &shard), (label, v)], n);
                }
            }
        }
        type Frames = fn(&crate::metrics::FrameCounts) -> u64;
        let frames: [(&str, &str, Frames); 4] = [
            (
                "peerd_frames_received_total",
                "Whole frames received from peers, by kind (Hello included).",
                |f| f.received,
            ),
            (
                "peerd_received_bytes_total",
                "Bytes of the frames received from peers (peerd headers included, WebSocket \
                 and TLS framing not), by kind.",
                |f| f.received_bytes,
            ),
            (
                "peerd_frames_sent_total",
                "Frames queued to peers, one per recipient, by kind.",
                |f| f.sent,
            ),
            (
                "peerd_sent_bytes_total",
                "Bytes of the frames queued to peers (peerd headers included, WebSocket and \
                 TLS framing not), by kind.",
                |f| f.sent_bytes,
            ),
        ];
        for (name, help, get) in frames {
            w.family(name, "counter", help);
            for s in &self.shards {
                let shard = s.shard.to_string();
                for f in &s.frames {
                    let labels = [("shard", shard.as_str()), ("kind", f.kind.name())];
                    w.sample(name, &labels, get(f));
                }
            }
        }
        type Gauge = fn(&ShardMetrics) -> u64;
        let gauges: [(&str, &str, &str, Gauge); 11] = [
            (
                "peerd_outbound_queue_bytes",
                "gauge",
                "What the shard's outbound queues are charged now (bytes + 64 per frame).",
                |s| s.outbound_queue_bytes,
            ),
            (
                "peerd_receive_buffer_bytes",
                "gauge",
                "Receive buffer bytes the shard has lent to connections now.",
                |s| s.receive_buffer_bytes,
            ),
            (
                "peerd_memory_budget_bytes",
                "gauge",
                "The shard's share of the memory budget for queues and receive buffers.",
                |s| s.memory_budget_bytes,
            ),
            (
                "peerd_topic_members",
                "gauge",
                "Topic memberships held by the shard's peers.",
                |s| s.topic_members,
            ),
            (
                "peerd_rate_limit_hits_total",
                "counter",
                "Frames refused by a per-peer rate limit (rate_limited; docs/PROTOCOL.md 6.9).",
                |s| s.rate_limit_hits,
            ),
            (
                "peerd_reads_deferred_total",
                "counter",
                "Reads put off to a later pass of the shard's loop: the pass's budget for bulk input was spent.",
                |s| s.reads_deferred,
            ),
            (
                "peerd_frames_deferred_total",
                "counter",
                "Times a connection's buffered frames were put off to a later pass of the shard's loop: the pass's share of sends was taken.",
                |s| s.frames_deferred,
            ),
            (
                "peerd_receive_ring_arms_total",
                "counter",
                "Multishot receives armed on the shard's io_uring (one per connection, one per pause or buffer shortage).",
                |s| s.receive_ring_arms,
            ),
            (
                "peerd_receive_ring_out_of_buffers_total",
                "counter",
                "Ring receives ended because every provided buffer of the shard was in use.",
                |s| s.receive_ring_out_of_buffers,
            ),
            (
                "peerd_receive_ring_direct_reads_total",
                "counter",
                "Reads a connection on the ring made directly from its socket after its receive was paused or ran out of buffers.",
                |s| s.receive_ring_direct_reads,
            ),
            (
                "peerd_receive_parks_total",
                "counter",
                "Connections parked on the shard's ring of polls after their handshake (they keep no glommio readiness poll).",
                |s| s.receive_parks,
            ),
        ];
        for (name, kind, help, get) in gauges {
            w.family(name, kind, help);
            for s in &self.shards {
                w.sample(name, &[("shard", &s.shard.to_string())], get(s));
            }
        }
        let name = "peerd_rpc_handler_duration_seconds";
        w.family(
            name,
            "histogram",
            "How long server-side RPC handlers took, from the request's dispatch to the \
             answer being queued.",
        );
        for s in &self.shards {
            let h = &s.rpc_handler_seconds;
            let shard = s.shard.to_string();
            let bucket = format!("{name}_bucket");
            let cumulative = h.cumulative();
            for (i, n) in cumulative.iter().enumerate() {
                let le = match h.bounds.get(i) {
                    Some(b) => format!("{b}"),
                    None => "+Inf".to_string(),
                };
                w.sample(&bucket, &[("shard", &shard), ("le", &le)], *n);
            }
            w.sample(&format!("{name}_sum"), &[("shard", &shard)], h.sum_seconds);
            w.sample(&format!("{name}_count"), &[("shard", &shard)], h.count());
        }
    }
}

struct Writer(String);

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(k);
                self.0.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.0.push_str("\\\\"),
                        '"' => self.0.push_str("\\\""),
                        '\n' => self.0.push_str("\\n"),
                        c => self.0.push(c),
                    }
                }
                self.0.push('"');
            }
            self.0.push('}');
        }
        self.0.push(' ');
        value.write(&mut self.0);
        self.0.push('\n');
    }
}

/// A sample value: counters are written as exact integers (an f64 would round them past
/// 2^53), everything else as [`number`] spells it.
trait Value {
    fn write(&self, out: &mut String);
}

impl Value for u64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write(&self, out: &mut String) {
        out.push_str(&number(*self));
    }
}

/// A sample value as the format writes it: integers without a fraction, `+Inf`/`-Inf`/`NaN`
/// spelled out (Rust's `inf` is not what Prometheus reads).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut w = Writer(String::new());
        w.family("peerd_x_total", "counter", "a \\ b\nc");
        w.sample("peerd_x_total", &[("reason", "a\"b\\c\nd")], 3.0);
        assert_eq!(
            w.0,
            "# HELP peerd_x_total a \\\\ b\\nc\n# TYPE peerd_x_total counter\n\
             peerd_x_total{reason=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }

    #[test]
    fn numbers_are_written_as_prometheus_reads_them() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.000_01), "0.00001");
        assert_eq!(number(1.5e9), "1500000000");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }
}

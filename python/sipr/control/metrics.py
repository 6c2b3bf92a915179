"""`stats.get` keys as Prometheus metrics, written by `prometheus_client`
(text exposition format; docs/decisions/0026-control-http-and-metrics.md).

Every metric's name, type and help is in this file: families with a label
(method, status class, queue) in FAMILIES, the other keys in SINGLES. A key
in neither (a new core counter) is still exported, as an untyped
`sipr_<key>` metric, so nothing is silently lost (and the metrics test, which
wants a type for each, names it)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector

Family = CounterMetricFamily | GaugeMetricFamily | UnknownMetricFamily

#: The Content-Type of `render()`'s output: every metric and label name here
#: is a classic (ASCII) one, so the text is format 0.0.4, which every
#: Prometheus version reads (prometheus_client's newest default, 1.0.0, only
#: adds UTF-8 names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

COUNTER, GAUGE = "counter", "gauge"

#: stats key prefix → (metric, type, label, help)
FAMILIES: dict[str, tuple[str, str, str, str]] = {
    "connections.": (
        "sipr_connections_open",
        GAUGE,
        "transport",
        "Open stream connections, by transport",
    ),
    "requests_in.": ("sipr_requests_received_total", COUNTER, "method", "SIP requests received"),
    "dispatcher.destinations.": (
        "sipr_dispatcher_destinations",
        GAUGE,
        "state",
        "Dispatcher destinations, by state",
    ),
    "dispatcher.selected.": (
        "sipr_dispatcher_selected_total",
        COUNTER,
        "destination",
        "Requests that tried this dispatcher destination (set/URI) first",
    ),
    "dispatcher.up.": (
        "sipr_dispatcher_destination_up",
        GAUGE,
        "destination",
        "1 while a dispatcher destination (set/URI) is active",
    ),
    "rtpengine.up.": (
        "sipr_rtpengine_instance_up",
        GAUGE,
        "instance",
        "1 while an rtpengine instance (set/address) is enabled",
    ),
    "security.bans.": (
        "sipr_security_bans_total",
        COUNTER,
        "reason",
        "Sources banned, by reason (flood, auth, scanner, manual)",
    ),
    "responses_in.": (
        "sipr_responses_received_total",
        COUNTER,
        "class",
        "SIP responses received, by status class",
    ),
    "responses_out.": (
        "sipr_responses_sent_total",
        COUNTER,
        "class",
        "SIP responses sent (generated or relayed statefully), by status class",
    ),
    "dialogs.ended.": (
        "sipr_dialogs_ended_total",
        COUNTER,
        "reason",
        "Confirmed dialogs ended, by reason (bye, timeout, keepalive, admin, shutdown)",
    ),
}

#: stats key → (metric, type, help)
SINGLES: dict[str, tuple[str, str, str]] = {
    "core.requests_forwarded": (
        "sipr_requests_forwarded_total",
        COUNTER,
        "Requests forwarded",
    ),
    "core.responses_relayed": (
        "sipr_responses_relayed_stateless_total",
        COUNTER,
        "Responses relayed statelessly",
    ),
    "core.parse_errors": ("sipr_parse_errors_total", COUNTER, "Unparsable messages received"),
    "core.overload_rejects": (
        "sipr_overload_rejects_total",
        COUNTER,
        "Requests refused with 503 because too many were pending",
    ),
    "core.drain_rejects": (
        "sipr_drain_rejects_total",
        COUNTER,
        "Requests refused with 503 while shutting down",
    ),
    "core.send_errors": ("sipr_send_errors_total", COUNTER, "Messages that could not be sent"),
    "core.dropped": ("sipr_dropped_total", COUNTER, "Messages dropped"),
    "core.stray_responses": (
        "sipr_stray_responses_dropped_total",
        COUNTER,
        "Responses matching no transaction and no branch this instance minted, dropped",
    ),
    "core.retransmissions": (
        "sipr_retransmissions_total",
        COUNTER,
        "Retransmissions received and absorbed",
    ),
    "onreply.handed": (
        "sipr_onreply_handed_total",
        COUNTER,
        "Responses handed to on_reply handlers in Python",
    ),
    "onreply.watched": (
        "sipr_onreply_watched",
        GAUGE,
        "Transactions whose relays asked for their responses (relay(on_reply=))",
    ),
    "onreply.refused": (
        "sipr_onreply_refused_total",
        COUNTER,
        "relay(on_reply=) calls refused because the watch table was full",
    ),
    "nat.bindings": (
        "sipr_nat_bindings",
        GAUGE,
        "Registered bindings behind NAT (with a received address), pinged by natping",
    ),
    "nat.pings_sent": ("sipr_nat_pings_sent_total", COUNTER, "NAT keepalive pings sent"),
    "nat.pings_answered": (
        "sipr_nat_pings_answered_total",
        COUNTER,
        "NAT keepalive OPTIONS answered",
    ),
    "nat.pings_failed": (
        "sipr_nat_pings_failed_total",
        COUNTER,
        "NAT keepalive pings unanswered or not sendable",
    ),
    "nat.dropped": (
        "sipr_nat_dropped_total",
        COUNTER,
        "Bindings removed after drop_after unanswered NAT keepalives",
    ),
    "registrar.native": (
        "sipr_registrar_native_total",
        COUNTER,
        "REGISTERs answered by the core's native registrar (no Python)",
    ),
    "security.bans_active": ("sipr_security_bans_active", GAUGE, "Sources banned now"),
    "security.banned_drops": (
        "sipr_security_banned_packets_dropped_total",
        COUNTER,
        "Packets from banned sources dropped unparsed",
    ),
    "security.flood.sources": (
        "sipr_security_flood_sources_tracked",
        GAUGE,
        "Sources whose request rate the flood detection tracks",
    ),
    "security.flood.evicted": (
        "sipr_security_flood_sources_evicted_total",
        COUNTER,
        "Tracked sources forgotten to keep the flood table bounded",
    ),
    "security.auth.failures": (
        "sipr_security_auth_failures_total",
        COUNTER,
        "Failed digest authentications counted for bans",
    ),
    "security.auth.user_locks": (
        "sipr_security_user_locks_total",
        COUNTER,
        "Users locked by failed authentications",
    ),
    "security.auth.users_locked": ("sipr_security_users_locked", GAUGE, "Users locked now"),
    "security.auth.locked_refusals": (
        "sipr_security_locked_refusals_total",
        COUNTER,
        "Authentication attempts refused because their user is locked",
    ),
    "security.auth.known_sources": (
        "sipr_security_known_sources",
        GAUGE,
        "(user, source) pairs that authenticated: exempt from that user's locks",
    ),
    "security.method_limited": (
        "sipr_security_method_limited_total",
        COUNTER,
        "Requests answered 503 by a per-method rate limit",
    ),
    "security.sanity_refused": (
        "sipr_security_sanity_refused_total",
        COUNTER,
        "Requests refused by the sanity checklist",
    ),
    "security.blocklist_drops": (
        "sipr_security_blocklist_drops_total",
        COUNTER,
        "Requests dropped by the User-Agent / From-user blocklist",
    ),
    "security.acl.rules": ("sipr_security_address_rules", GAUGE, "Address-group rules in force"),
    "security.topology.dialogs": (
        "sipr_topology_dialogs",
        GAUGE,
        "Dialogs kept for topology hiding",
    ),
    "security.topology.routed": (
        "sipr_topology_routed_total",
        COUNTER,
        "In-dialog requests routed by a topology-hiding token",
    ),
    "security.topology.unknown": (
        "sipr_topology_unknown_total",
        COUNTER,
        "In-dialog requests naming a hidden dialog that is not known (481)",
    ),
    "security.topology.evicted": (
        "sipr_topology_evicted_total",
        COUNTER,
        "Hidden dialogs dropped to keep the table bounded",
    ),
    "core.pending": ("sipr_requests_pending", GAUGE, "Requests held by the application"),
    "dns.lookups": ("sipr_dns_lookups_total", COUNTER, "RFC 3263 lookups of a name"),
    "dns.cache_hits": ("sipr_dns_cache_hits_total", COUNTER, "Lookups answered from the cache"),
    "dns.resolutions": (
        "sipr_dns_resolutions_total",
        COUNTER,
        "Resolutions started on the DNS thread (each NAPTR/SRV/A/AAAA chain)",
    ),
    "dns.joined": (
        "sipr_dns_joined_total",
        COUNTER,
        "Lookups that joined a resolution already in flight",
    ),
    "dns.negative": ("sipr_dns_negative_total", COUNTER, "Resolutions that found no address"),
    "dns.refused": (
        "sipr_dns_refused_total",
        COUNTER,
        "Lookups refused because too many names were being resolved",
    ),
    "dns.failovers": (
        "sipr_dns_failovers_total",
        COUNTER,
        "Requests re-sent to the next destination within their transaction",
    ),
    "dns.cache_entries": ("sipr_dns_cache_entries", GAUGE, "Cached resolutions"),
    "dns.inflight": ("sipr_dns_inflight", GAUGE, "Names being resolved"),
    "dns.waiting": ("sipr_dns_waiting", GAUGE, "Relays waiting for a name"),
    "dns.blocklisted": ("sipr_dst_blocklisted", GAUGE, "Destinations in the blocklist"),
    "dns.blocklist_added": (
        "sipr_dst_blocklist_added_total",
        COUNTER,
        "Destinations put on the blocklist (timeouts, unreachable)",
    ),
    "dispatcher.reloads": ("sipr_dispatcher_reloads_total", COUNTER, "Dispatcher set reloads"),
    "dispatcher.no_destination": (
        "sipr_dispatcher_no_destination_total",
        COUNTER,
        "Dispatcher selections that found no active destination",
    ),
    "core.connections": ("sipr_connections", GAUGE, "Open stream (TCP/TLS) connections"),
    "core.connects_failed": (
        "sipr_connects_failed_total",
        COUNTER,
        "TCP/TLS connects that failed or timed out",
    ),
    "core.connects_held_back": (
        "sipr_connects_held_back_total",
        COUNTER,
        "Messages failed at once: a connect to their address had just failed",
    ),
    "core.ingress_queue": (
        "sipr_ingress_queue_depth",
        GAUGE,
        "Messages read by the stream thread, not yet processed",
    ),
    "transactions.server": ("sipr_transactions_server", GAUGE, "Open server transactions"),
    "transactions.client": ("sipr_transactions_client", GAUGE, "Open client transactions"),
    "transactions.server_total": (
        "sipr_transactions_server_created_total",
        COUNTER,
        "Server transactions created",
    ),
    "transactions.client_total": (
        "sipr_transactions_client_created_total",
        COUNTER,
        "Client transactions created",
    ),
    "transactions.contexts": ("sipr_proxy_contexts", GAUGE, "Open proxy (relay) contexts"),
    "transactions.contexts_settled": (
        "sipr_proxy_contexts_settled",
        GAUGE,
        "Proxy contexts done, kept until their server transaction ends",
    ),
    "core.timers": ("sipr_timers", GAUGE, "Scheduled transaction timers"),
    "core.relays_waiting": ("sipr_relays_waiting", GAUGE, "relay() calls awaiting a result"),
    "handlers.running": ("sipr_handlers_running", GAUGE, "Route handlers running"),
    "handlers.suspended": (
        "sipr_handlers_suspended",
        GAUGE,
        "Route handlers suspended (awaiting something)",
    ),
    "handlers.deadline_expired": (
        "sipr_handlers_deadline_expired_total",
        COUNTER,
        "Route handlers stopped by their deadline",
    ),
    "loop.stalls": ("sipr_loop_stalls_total", COUNTER, "Event-loop stalls detected"),
    "events.dispatched": ("sipr_event_hook_calls_total", COUNTER, "Event hook calls (app.events)"),
    "events.sends_refused": (
        "sipr_sends_refused_total",
        COUNTER,
        "Requests an on_send hook kept from being sent",
    ),
    "events.core_calls": (
        "sipr_event_hook_core_calls_total",
        COUNTER,
        "Calls from the core into Python for on_send / on_timeout hooks",
    ),
    "loop.lag_ms": ("sipr_loop_lag_seconds", GAUGE, "Event-loop lag of the last probe"),
    "registrations.aors": ("sipr_registered_aors", GAUGE, "AoRs with live bindings"),
    "registrations.bindings": ("sipr_registered_contacts", GAUGE, "Live registered contacts"),
    "process.rss_bytes": ("sipr_process_resident_memory_bytes", GAUGE, "Resident memory"),
    "process.threads": ("sipr_process_threads", GAUGE, "OS threads of the process"),
    "process.uptime_seconds": ("sipr_uptime_seconds", GAUGE, "Seconds since start"),
    "dialogs.active": ("sipr_dialogs", GAUGE, "Dialogs tracked now"),
    "dialogs.unconfirmed": ("sipr_dialogs_unconfirmed", GAUGE, "Dialogs with no answer yet"),
    "dialogs.early": ("sipr_dialogs_early", GAUGE, "Early dialogs (ringing)"),
    "dialogs.confirmed": ("sipr_dialogs_confirmed", GAUGE, "Confirmed dialogs (calls up)"),
    "dialogs.created": ("sipr_dialogs_created_total", COUNTER, "Dialogs tracked since start"),
    "dialogs.answered": ("sipr_dialogs_answered_total", COUNTER, "Dialogs answered (2xx)"),
    "dialogs.failed": (
        "sipr_dialogs_failed_total",
        COUNTER,
        "Dialogs whose INVITE got a final answer >= 300, or none",
    ),
    "dialogs.refused": (
        "sipr_dialogs_refused_total",
        COUNTER,
        "track_dialog() refused because the dialog table was full",
    ),
    "dialogs.keepalives_sent": (
        "sipr_dialogs_keepalives_sent_total",
        COUNTER,
        "In-dialog keepalive OPTIONS sent",
    ),
    "dialogs.requests_sent": (
        "sipr_dialogs_requests_sent_total",
        COUNTER,
        "Requests the dialog module sent (keepalive OPTIONS, BYE)",
    ),
    "dialogs.bytes_per_dialog": (
        "sipr_dialogs_bytes_per_dialog",
        GAUGE,
        "Memory held per tracked dialog (heap and table), bytes",
    ),
    "acc.records": ("sipr_acc_records_total", COUNTER, "Accounting records produced"),
    "acc.records_dropped": (
        "sipr_acc_records_dropped_total",
        COUNTER,
        "Accounting records dropped in the core (its queue was full)",
    ),
    "dialogs.events_queued": (
        "sipr_dialog_events_queued_total",
        COUNTER,
        "Dialog start/end events queued for the app's hooks",
    ),
    "dialogs.events_dropped": (
        "sipr_dialog_events_dropped_total",
        COUNTER,
        "Dialog events dropped: their queue was full (a stalled loop)",
    ),
    "acc.records_queued": (
        "sipr_acc_records_queued",
        GAUGE,
        "Accounting records in the core waiting for the writer",
    ),
    "acc.written": ("sipr_acc_written_total", COUNTER, "Accounting records written"),
    "acc.write_errors": (
        "sipr_acc_write_errors_total",
        COUNTER,
        "Failed accounting batch writes (retried)",
    ),
    "acc.pending": ("sipr_acc_pending", GAUGE, "Accounting records in memory, not yet written"),
    "acc.spooled": (
        "sipr_acc_spooled_total",
        COUNTER,
        "Accounting records moved to the on-disk spool",
    ),
    "acc.replayed": (
        "sipr_acc_replayed_total",
        COUNTER,
        "Spooled accounting records written",
    ),
    "acc.spool_files": ("sipr_acc_spool_files", GAUGE, "Files in the accounting spool"),
    "acc.spool_dropped": (
        "sipr_acc_spool_dropped_total",
        COUNTER,
        "Accounting records dropped because the spool was full",
    ),
    "acc.healthy": (
        "sipr_acc_healthy",
        GAUGE,
        "1 when the last accounting write succeeded, 0 while retrying",
    ),
}

#: Keys that are sums of a family already exported, or not a measurement.
SKIPPED = {"core.responses_in", "core.responses_out", "process.pid"}

_QUEUE = re.compile(r"^queue\.(.+)\.(size|processed|dropped)$")
_QUEUE_METRICS = {
    "size": ("sipr_queue_size", GAUGE, "Items waiting in an app work queue"),
    "processed": ("sipr_queue_processed_total", COUNTER, "Items an app work queue processed"),
    "dropped": ("sipr_queue_dropped_total", COUNTER, "Items an app work queue dropped (full)"),
}

_RTPENGINE = re.compile(r"^rtpengine\.([^.]+)\.(offers|answers|deletes|errors|calls)$")
_RTPENGINE_METRICS = {
    "offers": ("sipr_rtpengine_offers_total", COUNTER, "SDP offers sent through rtpengine"),
    "answers": ("sipr_rtpengine_answers_total", COUNTER, "SDP answers sent through rtpengine"),
    "deletes": ("sipr_rtpengine_deletes_total", COUNTER, "rtpengine sessions deleted"),
    "errors": (
        "sipr_rtpengine_errors_total",
        COUNTER,
        "rtpengine commands that failed (no instance answered, or refused)",
    ),
    "calls": ("sipr_rtpengine_calls", GAUGE, "Calls with an rtpengine session (remembered)"),
}


_MAKERS: dict[str, type[Family]] = {COUNTER: CounterMetricFamily, GAUGE: GaugeMetricFamily}


class _Snapshot(Collector):
    """A prometheus_client collector over `stats.get` dicts, each with extra
    labels of its own (`{"worker": "0"}` under `--workers`; none for one
    process)."""

    def __init__(self, sets: list[tuple[dict[str, str], dict[str, float]]]) -> None:
        self.sets = sets

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Family] = {}
        for extra, stats in self.sets:
            values = list(extra.values())
            family = functools.partial(_family, families, list(extra))
            for key, value in stats.items():
                if key in SKIPPED:
                    continue
                if key in SINGLES:
                    metric, kind, help_ = SINGLES[key]
                    if key == "loop.lag_ms":
                        value = value / 1000
                    family(metric, kind, help_, []).add_metric(values, value)
                    continue
                prefix = next((p for p in FAMILIES if key.startswith(p)), None)
                if prefix is not None:
                    metric, kind, label, help_ = FAMILIES[prefix]
                    fam = family(metric, kind, help_, [label])
                    fam.add_metric([*values, key[len(prefix) :]], value)
                    continue
                m = _RTPENGINE.match(key)
                if m:
                    metric, kind, help_ = _RTPENGINE_METRICS[m.group(2)]
                    fam = family(metric, kind, help_, ["set"])
                    fam.add_metric([*values, m.group(1)], value)
                    continue
                m = _QUEUE.match(key)
                if m:
                    metric, kind, help_ = _QUEUE_METRICS[m.group(2)]
                    fam = family(metric, kind, help_, ["queue"])
                    fam.add_metric([*values, m.group(1)], value)
                    continue
                name = "sipr_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)
                family(name, "untyped", f"sipr statistic {key}", []).add_metric(values, value)
        yield from (families[name] for name in sorted(families))


def _family(
    families: dict[str, Family],
    extra: list[str],
    metric: str,
    kind: str,
    help_: str,
    labels: list[str],
) -> Family:
    """The family `metric` of one exposition, made on first use with the
    extra label names before its own."""
    if metric not in families:
        make = _MAKERS.get(kind, UnknownMetricFamily)
        families[metric] = make(metric, help_, labels=[*extra, *labels])
    return families[metric]


def render(stats: dict[str, float]) -> bytes:
    """The exposition of one snapshot of the statistics."""
    return render_labelled([({}, stats)])


def render_labelled(sets: list[tuple[dict[str, str], dict[str, float]]]) -> bytes:
    """Several snapshots in one exposition, each sample carrying its set's
    extra labels (every set must name the same ones)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(sets))
    return generate_latest(registry)

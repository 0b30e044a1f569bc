//! The end of a connection, and settling a shard after a batch of work.
//!
//! Closing a connection (`Conn::close`, `Conn::peer_closed`) only changes its state and
//! queues the session in `Local::closing`; [`settle`] then tears it down ([`teardown`]) and
//! writes out everything queued. Keeping teardown out of `close` means a close can happen
//! anywhere (in the middle of a fan-out, inside a user callback) without re-entering the
//! tables being walked, and that the connection layer needs to know nothing above it.

use std::rc::Rc;

use peerd_codec::{Code, PresenceChange};

use crate::cluster::link::here;
use crate::cluster::wire::Op;
use crate::cluster::BridgeCmd;
use crate::conn::Conn;
use crate::local::RELAY_COST;
use crate::metrics::SlowConsumer;
use crate::p2p::fail_relays_to;
use crate::presence::{announce_global, drop_all_watches};
use crate::shard::Shard;
use crate::topics::leave_all;

/// Tear down every connection closed since the last settle, then write out every queued
/// frame; repeat while that closes more (a teardown's notices can overflow another queue).
/// Call at the end of every batch of work: a read batch, an inbox batch, a timer tick, a
/// handler's completion.
pub(crate) fn settle(shard: &Rc<Shard>) {
    let mut enforced = false;
    let mut cut = 0;
    loop {
        let closing = shard.local.take_closing();
        for session in &closing {
            if let Some(conn) = shard.conn(*session) {
                teardown(shard, &conn);
            }
        }
        shard.local.writes.flush();
        if shard.local.memory_held() > shard.local.budget_counted() {
            cut += enforce_budget(shard);
            enforced = true;
        }
        if closing.is_empty() && shard.local.nothing_closing() {
            break;
        }
    }
    if enforced {
        // After the teardowns: what the closed peers' receive buffers held is back.
        shard.local.budget_enforced();
    }
    if cut > 0 {
        // The cut peers' receive buffers went back to the allocator, which keeps their
        // pages: the budget bounds RSS only if they go back to the system now. 5,000 peers
        // sending partial frames took a 256 MiB budget to 252-281 MiB of RSS without this,
        // 244-250 with it (results/budget-trim/). Only after a cut (not while cut peers'
        // queues drain over the budget), so about once per sixteenth of the budget regrown.
        shard.local.return_freed_memory();
    }
}

/// The shard holds more than it lets its counted memory reach (queues, receive buffers,
/// relayed calls; `Local::budget_counted`, seven eighths of its budget): close the
/// connections holding the most, until what the live ones hold is back under three
/// quarters of the budget. Connections already closing are not counted: their receive
/// buffers and relay slots go at their teardown (this settle), their queues once the
/// Close is out, so they are never closed twice over. Returns how many it closed.
fn enforce_budget(shard: &Rc<Shard>) -> usize {
    let budget = shard.local.memory_budget.get();
    let mut holders: Vec<(usize, Rc<Conn>)> = shard
        .all_conns()
        .into_iter()
        .filter(|c| c.is_active())
        .map(|c| (held_by(&c), c))
        .collect();
    let mut live: usize = holders.iter().map(|(n, _)| n).sum();
    if live <= shard.local.budget_counted() {
        return 0;
    }
    holders.sort_unstable_by_key(|(held, _)| std::cmp::Reverse(*held));
    let mut closed = 0;
    for (held, c) in holders {
        if live <= budget / 4 * 3 || held == 0 {
            break;
        }
        // Mostly its queue: it does not read (slow_consumer); else it sends what the server
        // must hold (a large partial frame, relayed calls): overloaded.
        if c.out.charged() * 2 >= held {
            shard
                .local
                .metrics
                .slow_consumer(SlowConsumer::MemoryBudget);
            c.close(
                Code::SlowConsumer,
                "shard memory budget exceeded: largest outbound queue",
            );
        } else {
            c.close(
                Code::Overloaded,
                "shard memory budget exceeded: largest receive buffer or relayed calls",
            );
        }
        live -= held;
        closed += 1;
    }
    tracing::warn!(
        shard = shard.index(),
        budget,
        closed,
        held = shard.local.memory_held(),
        "memory budget exceeded; closed the largest holders"
    );
    closed
}

/// What a connection holds, as the memory budget counts it: its queue, its receive buffer,
/// and its relayed calls waiting for answers.
fn held_by(c: &Conn) -> usize {
    c.out.charged() + c.rx_held() + c.relayed_calls.get() as usize * RELAY_COST
}

/// Undo everything the connection took part in: the directory, topics, watches, relayed
/// calls, presence; fail its pending calls (PeerGone) and run its disconnect callbacks.
fn teardown(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    let Some((code, callbacks)) = conn.take_for_teardown() else {
        return;
    };
    shard.unregister(conn.session);
    conn.rx.borrow_mut().clear(&shard.local.rx_pool);
    conn.set_rx_held(0);
    // Answers to its calls will find no one: stop counting them now.
    conn.relay_ended(true);
    let shared = shard.shared();
    shared.directory.release(&conn.peer_id, conn.session);
    shard.local.connection_ended(conn.out.transport());
    shard.local.metrics.closed(code);
    leave_all(shard, conn);
    drop_all_watches(shard, conn);
    fail_relays_to(shard, conn.session);
    shard.remote_calls.borrow_mut().session_gone(conn.session);
    announce_global(shard, conn, PresenceChange::Leave);
    if let Some(c) = &shared.cluster {
        c.state(vec![Op::PeerDown {
            peer: conn.peer_id.clone(),
            at: here(shard.index(), conn.session),
        }]);
        c.cmd(BridgeCmd::Release {
            peer: conn.peer_id.clone(),
            session: conn.session,
        });
    }
    for cb in callbacks {
        cb(code);
    }
}

//! The corpus's scenarios. Direct scripts ([`direct_scripts`]) drive the stock anvil binary
//! with raw protocol traffic; each one pins a group of rules of anvil-protocol.md (section
//! numbers in their descriptions).

use std::time::Duration;

use super::direct::{Script, Step};
use super::transcript::ConnKind::{Anvil, AnvilAuthPenalty, MasterPipe, SharedPipe};

/// Every direct script, in corpus order.
pub fn direct_scripts() -> Vec<Script> {
    let mut v = vec![
        handshake_accepted(),
        handshake_rejected(),
        connect_lookup_dump(),
        disconnect_unknown(),
        connect_malformed(),
        disconnect_malformed(),
        kill_master_pipe(),
        kill_rejected(),
        lookup(),
        pipe_error_kill_on_shared_pipe(),
        pipe_error_kill_malformed_master_pipe(),
        pipe_error_lookup_on_shared_pipe(),
        pipe_error_bad_handshake(),
        pipe_error_oversized_line(),
        penalty_get_inc(),
        penalty_checksum_memory(),
        penalty_malformed(),
        penalty_dump_order(),
        penalty_expiry(),
        escapes(),
        framing(),
        oversized_lines(),
        unknown_commands(),
        errors_keep_earlier_effects(),
        anvil_restart(),
        shutdown_master_dead(),
        pipe_commands(),
        many_sessions_dump(),
    ];
    v.sort_by_key(|s| s.name);
    v
}

fn handshake_accepted() -> Script {
    let mut s = Script::new(
        "handshake-accepted",
        "Handshake variants stock accepts (§2): leading zero major, any 32-bit minor, CRLF,\n\
         commands in the same write, either socket.",
    );
    let variants: [&[u8]; 6] = [
        b"VERSION\tanvil\t1\t0\n",
        b"VERSION\tanvil\t01\t0\n",
        b"VERSION\tanvil\t1\t99\n",
        b"VERSION\tanvil\t1\t4294967295\n",
        b"VERSION\tanvil\t1\t0\r\n",
        b"VERSION\tanvil\t1\t0\nLOOKUP\tx\n",
    ];
    for (i, v) in variants.iter().enumerate() {
        let id = i as u32 + 1;
        s = s.open(id, Anvil).send(id, v).send(id, "LOOKUP\tx\n");
    }
    s.open(7, AnvilAuthPenalty)
        .send(7, "VERSION\tanvil\t1\t0\nLOOKUP\tx\n")
        .close(7)
}

fn handshake_rejected() -> Script {
    let mut s = Script::new(
        "handshake-rejected",
        "First lines stock rejects (§2), each on its own connection: the anvil closes it.",
    );
    let variants: [&[u8]; 10] = [
        b"VERSION\tanvil\t1\t4294967296\n",
        b"VERSION\tanvilx\t1\t0\n",
        b"version\tanvil\t1\t0\n",
        b"VERSION\tanvil\t2\t0\n",
        b"VERSION\tanvil\t1\t0\tx\n",
        b"VERSION\tanvil\t1\n",
        b"LOOKUP\tx\n",
        b"\n",
        b"VERSION\tanvil\t-1\t0\n",
        b"VERSION\tanvil\t1\t 0\n",
    ];
    for (i, v) in variants.iter().enumerate() {
        let id = i as u32 + 1;
        s = s.open(id, Anvil).send(id, v);
    }
    // A second VERSION line is an ordinary, unknown command.
    s.client(20).send(20, "VERSION\tanvil\t1\t0\n")
}

fn connect_lookup_dump() -> Script {
    Script::new(
        "connect-lookup-dump",
        "CONNECT/DISCONNECT from the shared pipe and a socket, LOOKUP sums over pids, CONNECT-DUMP\n\
         rows per (ident, pid) (§4.2, §5.1); pid 007 is stored as 7; an empty ident is fine.",
    )
    .pipes(1, 2)
    .client(3)
    .send(2, "CONNECT\t4242\ttest/1.2.3.4/u\n")
    .send(2, "CONNECT\t4242\ttest/1.2.3.4/u\n")
    .send(3, "CONNECT\t4343\ttest/1.2.3.4/u\nCONNECT\t4343\tother/u2\n")
    .send(3, "LOOKUP\ttest/1.2.3.4/u\nLOOKUP\tother/u2\nLOOKUP\tTEST/1.2.3.4/u\n")
    .send(3, "CONNECT-DUMP\n")
    .send(2, "DISCONNECT\t4242\ttest/1.2.3.4/u\n")
    .send(3, "LOOKUP\ttest/1.2.3.4/u\n")
    .send(3, "CONNECT\t007\tzero/7\nCONNECT\t0\t\nCONNECT\t2147483647\tmax/pid\n")
    .send(3, "CONNECT-DUMP\n")
    .client(4)
    .send(4, "DISCONNECT\t4242\ttest/1.2.3.4/u\nDISCONNECT\t7\tzero/7\nCONNECT-DUMP\n")
    .close(3)
    .close(4)
}

fn disconnect_unknown() -> Script {
    Script::new(
        "disconnect-unknown",
        "DISCONNECT of an unknown (pid, ident) logs an error but keeps the connection (§4.2).",
    )
    .client(1)
    .send(1, "DISCONNECT\t5\tnobody/here\n")
    .send(
        1,
        "CONNECT\t5\tx/1.1.1.1/u\nDISCONNECT\t6\tx/1.1.1.1/u\nLOOKUP\tx/1.1.1.1/u\n",
    )
    .send(
        1,
        "DISCONNECT\t5\tx/1.1.1.1/u\nDISCONNECT\t5\tx/1.1.1.1/u\nLOOKUP\tx/1.1.1.1/u\n",
    )
    .close(1)
}

fn malformed(name: &'static str, about: &'static str, good: &[&str], bad: &[&str]) -> Script {
    let mut s = Script::new(name, about).client(1);
    for g in good {
        s = s.send(1, format!("{g}\n"));
    }
    s = s.send(1, "CONNECT-DUMP\n");
    for (i, b) in bad.iter().enumerate() {
        let id = i as u32 + 2;
        s = s.client(id).send(id, format!("{b}\n"));
    }
    s.send(1, "CONNECT-DUMP\n").close(1)
}

fn connect_malformed() -> Script {
    malformed(
        "connect-malformed",
        "CONNECT argument errors close the connection (§4.2 pid rules); valid edge pids stay.",
        &[
            "CONNECT\t0\tpid/zero",
            "CONNECT\t2147483647\tpid/max",
            "CONNECT\t00012\tpid/lead",
            "CONNECT\t1\ta\textra",
        ],
        &[
            "CONNECT",
            "CONNECT\t1",
            "CONNECT\tabc\tx",
            "CONNECT\t-1\tx",
            "CONNECT\t\tx",
            "CONNECT\t+5\tx",
            "CONNECT\t 5\tx",
            "CONNECT\t2147483648\tx",
            "CONNECT\t123456789012345678901\tx",
            "CONNECT\t5x\tx",
        ],
    )
}

fn disconnect_malformed() -> Script {
    malformed(
        "disconnect-malformed",
        "DISCONNECT argument errors close the connection (§4.2).",
        &["CONNECT\t3\td/1", "DISCONNECT\t3\td/1"],
        &[
            "DISCONNECT",
            "DISCONNECT\t3",
            "DISCONNECT\tx\td/1",
            "DISCONNECT\t2147483648\td/1",
            "DISCONNECT\t\t",
        ],
    )
}

fn kill_master_pipe() -> Script {
    Script::new(
        "kill-master-pipe",
        "KILL on the master pipe removes every session of a pid; unknown pids are silent (§4.2).",
    )
    .pipes(1, 2)
    .client(3)
    .send(2, "CONNECT\t100\timap/1.2.3.4/a\nCONNECT\t100\tpop3/1.2.3.4/a\nCONNECT\t100\timap/1.2.3.4/a\n")
    .send(2, "CONNECT\t200\timap/1.2.3.4/b\nCONNECT\t300\timap/1.2.3.4/a\n")
    .send(3, "CONNECT-DUMP\n")
    .send(1, "KILL\t100\n")
    .send(3, "LOOKUP\timap/1.2.3.4/a\nCONNECT-DUMP\n")
    .send(1, "KILL\t999\nKILL\t0300\n")
    .send(3, "CONNECT-DUMP\n")
    .close(3)
}

fn kill_rejected() -> Script {
    Script::new(
        "kill-rejected",
        "KILL from a socket is an error whichever socket it comes on, and fails on the parameter\n\
         count first when the pid is missing (§4.2); the connection is closed.",
    )
    .pipes(1, 2)
    .client(3)
    .send(3, "KILL\t1\n")
    .penalty_client(4)
    .send(4, "KILL\t1\n")
    .client(5)
    .send(5, "KILL\n")
    .client(6)
    .send(6, "KILL\tx\n")
    .send(2, "CONNECT\t5\tk/1\n")
    .send(1, "KILL\t5\n")
    .client(7)
    .send(7, "LOOKUP\tk/1\n")
    .close(7)
}

fn lookup() -> Script {
    Script::new(
        "lookup",
        "LOOKUP: extra fields ignored, an empty ident is an ident, a missing argument closes (§4.2).",
    )
    .pipes(1, 2)
    .client(3)
    .send(3, "LOOKUP\tnone\nLOOKUP\tx\textra\tmore\nLOOKUP\t\n")
    .send(2, "CONNECT\t5\t\n")
    .send(3, "LOOKUP\t\n")
    .client(4)
    .send(4, "LOOKUP\n")
    .close(3)
}

fn pipe_error_kill_on_shared_pipe() -> Script {
    Script::new(
        "pipe-error-kill-on-shared-pipe",
        "KILL on the shared pipe is an input error: stock closes the pipe for good and later\n\
         CONNECTs on it are lost (§4.2, §1.3). Foreman deviates on purpose (docs/anvil.md).",
    )
    .pipes(1, 2)
    .send(2, "KILL\t1\n")
    .send(2, "CONNECT\t5\tlost/1\n")
    .client(3)
    .send(3, "LOOKUP\tlost/1\n")
    .close(3)
}

fn pipe_error_kill_malformed_master_pipe() -> Script {
    Script::new(
        "pipe-error-kill-malformed-master-pipe",
        "KILL with an invalid pid closes even the master pipe, and later KILLs are lost (§4.2).\n\
         Foreman deviates on purpose (docs/anvil.md).",
    )
    .pipes(1, 2)
    .send(2, "CONNECT\t9\tk/1\n")
    .send(1, "KILL\tnine\n")
    .send(1, "KILL\t9\n")
    .client(3)
    .send(3, "LOOKUP\tk/1\n")
    .close(3)
}

fn pipe_error_lookup_on_shared_pipe() -> Script {
    Script::new(
        "pipe-error-lookup-on-shared-pipe",
        "LOOKUP on a pipe closes that pipe for good; later CONNECTs on it are lost (§4.2, §8.3).\n\
         Foreman deviates on purpose (docs/anvil.md).",
    )
    .pipes(1, 2)
    .send(2, "LOOKUP\tx\n")
    .send(2, "CONNECT\t5\tlost/1\n")
    .client(3)
    .send(3, "LOOKUP\tlost/1\n")
    .close(3)
}

fn pipe_error_bad_handshake() -> Script {
    Script::new(
        "pipe-error-bad-handshake",
        "A first line on the shared pipe that is not the VERSION line (no ANVIL_RESTARTED):\n\
         stock closes the pipe (§2). Foreman deviates on purpose (docs/anvil.md).",
    )
    .open(2, SharedPipe)
    .open(1, MasterPipe)
    .send(2, "CONNECT\t5\tearly/1\n")
    .send(2, "VERSION\tanvil\t1\t0\nCONNECT\t6\tlate/1\n")
    .send(1, "VERSION\tanvil\t1\t0\n")
    .client(3)
    .send(3, "LOOKUP\tearly/1\nLOOKUP\tlate/1\n")
    .close(3)
}

fn penalty_get_inc() -> Script {
    Script::new(
        "penalty-get-inc",
        "PENALTY-GET/INC: unknown ident is '0 0', checksum 0 sets the value, a known checksum\n\
         gives value-1 and keeps last_penalty, reset with '0 0' keeps the checksums (§5.2).",
    )
    .penalty_client(1)
    .send(1, "PENALTY-GET\t1.2.3.4\n")
    .send(1, "PENALTY-INC\t1.2.3.4\t0\t2\nPENALTY-GET\t1.2.3.4\n")
    .step(Step::Sleep(Duration::from_millis(1100)))
    .send(1, "PENALTY-INC\tx\t7\t5\nPENALTY-GET\tx\n")
    .step(Step::Sleep(Duration::from_millis(1100)))
    .send(1, "PENALTY-INC\tx\t7\t5\nPENALTY-GET\tx\n")
    .send(1, "PENALTY-INC\tx\t7\t1\nPENALTY-GET\tx\n")
    .send(1, "PENALTY-INC\tx\t0\t0\nPENALTY-GET\tx\n")
    .send(1, "PENALTY-INC\tx\t7\t3\nPENALTY-GET\tx\n")
    .send(1, "PENALTY-DUMP\n")
    .close(1)
}

fn penalty_checksum_memory() -> Script {
    let mut s = Script::new(
        "penalty-checksum-memory",
        "The 10 most recently used checksums are remembered per ident (§5.2, [live P4/P5]).",
    )
    .penalty_client(1);
    for c in 1..=11 {
        s = s.send(1, format!("PENALTY-INC\tm\t{c}\t3\n"));
    }
    s.send(1, "PENALTY-GET\tm\n")
        .send(1, "PENALTY-INC\tm\t1\t3\nPENALTY-GET\tm\n")
        .send(1, "PENALTY-INC\tm\t11\t3\nPENALTY-GET\tm\n")
        .send(1, "PENALTY-INC\tm\t2\t3\nPENALTY-GET\tm\n")
        .send(1, "PENALTY-INC\tm\t4\t3\nPENALTY-GET\tm\n")
        .send(1, "PENALTY-INC\tm\t3\t3\nPENALTY-GET\tm\n")
        .close(1)
}

fn penalty_malformed() -> Script {
    let mut s = Script::new(
        "penalty-malformed",
        "PENALTY-* argument errors close the connection; edge values that are valid do not (§4.2).",
    )
    .penalty_client(1)
    .send(
        1,
        "PENALTY-INC\tv\t4294967295\t65535\nPENALTY-INC\tw\t0\t0\nPENALTY-SET-EXPIRE-SECS\t0\n",
    )
    .send(
        1,
        "PENALTY-SET-EXPIRE-SECS\t4294967295\nPENALTY-GET\tv\nPENALTY-GET\tw\n",
    );
    let bad = [
        "PENALTY-INC",
        "PENALTY-INC\tv\t1",
        "PENALTY-INC\tv\tx\t1",
        "PENALTY-INC\tv\t1\t65536",
        "PENALTY-INC\tv\t5\t0",
        "PENALTY-INC\tv\t4294967296\t1",
        "PENALTY-INC\tv\t1\t-1",
        "PENALTY-GET",
        "PENALTY-SET-EXPIRE-SECS",
        "PENALTY-SET-EXPIRE-SECS\tabc",
        "PENALTY-SET-EXPIRE-SECS\t4294967296",
    ];
    for (i, b) in bad.iter().enumerate() {
        let id = i as u32 + 2;
        s = s.penalty_client(id).send(id, format!("{b}\n"));
    }
    s.send(1, "PENALTY-DUMP\n").close(1)
}

fn penalty_dump_order() -> Script {
    Script::new(
        "penalty-dump-order",
        "PENALTY-DUMP lists records oldest update first; an INC moves a record to the end (§5.2).",
    )
    .penalty_client(1)
    .send(1, "PENALTY-INC\tpA\t0\t1\n")
    .step(Step::Sleep(Duration::from_millis(1100)))
    .send(1, "PENALTY-INC\tpB\t0\t2\n")
    .step(Step::Sleep(Duration::from_millis(1100)))
    .send(1, "PENALTY-INC\tpC\t1\t3\nPENALTY-DUMP\n")
    .step(Step::Sleep(Duration::from_millis(1100)))
    .send(1, "PENALTY-INC\tpA\t9\t4\nPENALTY-DUMP\n")
    .close(1)
}

fn penalty_expiry() -> Script {
    Script::new(
        "penalty-expiry",
        "Records expire expire_secs after their last INC; expire_secs 0 purges at the next loop\n\
         pass but a GET in the same batch still sees the record (§5.2).",
    )
    .penalty_client(1)
    .send(
        1,
        "PENALTY-SET-EXPIRE-SECS\t1\nPENALTY-INC\te\t0\t1\nPENALTY-GET\te\n",
    )
    .step(Step::Sleep(Duration::from_millis(3000)))
    .send(1, "PENALTY-GET\te\nPENALTY-DUMP\n")
    .send(
        1,
        "PENALTY-SET-EXPIRE-SECS\t0\nPENALTY-INC\tz\t0\t1\nPENALTY-GET\tz\n",
    )
    .step(Step::Sleep(Duration::from_millis(1000)))
    .send(1, "PENALTY-GET\tz\nPENALTY-DUMP\n")
    .close(1)
}

fn escapes() -> Script {
    Script::new(
        "escapes",
        "Tab escaping (§3): dumps re-escape idents canonically, \\001 before any other byte gives\n\
         that byte, a trailing \\001 is dropped, \\0010 cuts a field, an escape never protects a\n\
         TAB, command names and pids are unescaped too; bytes >= 0x80 and backslash are data.",
    )
    .client(1)
    .send(1, b"CONNECT\t1\tesc/a\x01tb\x01nc\x01rd\x011e\nCONNECT-DUMP\n".as_slice())
    .send(1, b"CONNECT\t2\tesc2/\x01x\x01\x01y\x01\nLOOKUP\tesc2/x\x01y\n".as_slice())
    .send(1, b"CONNECT\t3\tq\x01\tx\nLOOKUP\tq\n".as_slice())
    .send(1, b"CONNECT\t4\tesc4/ab\x010cd\nLOOKUP\tesc4/ab\n".as_slice())
    .send(1, b"LOOK\x01UP\tesc4/ab\n".as_slice())
    .send(1, b"CONNECT\t9\x0105\tesc6/p\nCONNECT\t5\t\xc3\xa9\\back\xff\nCONNECT-DUMP\n".as_slice())
    .send(1, b"LOOKUP\t\x01t\x01n\n".as_slice())
    .close(1)
}

fn framing() -> Script {
    Script::new(
        "framing",
        "Line framing (§1.8): one CR before LF is stripped, other CRs are data, NUL ends a line,\n\
         lines may be split across writes or pipelined, empty lines are ignored, a lone TAB is\n\
         an unknown empty command.",
    )
    .client(1)
    .send(
        1,
        b"CONNECT\t1\ta\rb\r\nCONNECT\t1\ta\r\r\nLOOKUP\ta\rb\nCONNECT-DUMP\n".as_slice(),
    )
    .send(1, b"LOOKUP\ta\rb\x00garbage\tmore\n".as_slice())
    .send(1, "LOO")
    .send(1, "KUP\ta\r")
    .send(1, "b\n")
    .send(1, "\n\n\r\n")
    .send(1, "LOOKUP\tp\n".repeat(40))
    .client(2)
    .send(2, "\t\n")
    .close(1)
}

fn oversized_lines() -> Script {
    let a1016 = "a".repeat(1016);
    let a1017 = "a".repeat(1017);
    Script::new(
        "oversized-lines",
        "A line of 1024 bytes with its LF is accepted, 1025 is not: the connection is closed,\n\
         after replies to complete lines before it (§1.8).",
    )
    .client(1)
    .send(1, format!("LOOKUP\t{a1016}\n"))
    .send(1, "LOOKUP\tx\n")
    .client(2)
    .send(2, format!("LOOKUP\t{a1017}\n"))
    .client(3)
    .send(3, format!("LOOKUP\tx\n{}", "b".repeat(2000)))
    .client(4)
    .send(4, "c".repeat(1023))
    .send(4, "\n")
    .close(1)
    .close(4)
}

fn pipe_error_oversized_line() -> Script {
    Script::new(
        "pipe-error-oversized-line",
        "An oversized line on the shared pipe closes that pipe for good (§1.8, §1.3).\n\
         Foreman deviates on purpose (docs/anvil.md).",
    )
    .pipes(1, 2)
    .send(2, format!("CONNECT\t1\t{}\n", "d".repeat(1100)))
    .send(2, "CONNECT\t1\tafter/1\n")
    .client(3)
    .send(3, "LOOKUP\tafter/1\nCONNECT-DUMP\n")
    .close(3)
}

fn unknown_commands() -> Script {
    Script::new(
        "unknown-commands",
        "Command names are case-sensitive and unknown ones close the connection; every command\n\
         works on either socket; dump arguments are ignored (§4.1, §4.2).",
    )
    .client(1)
    .send(1, "lookup\tx\n")
    .client(2)
    .send(2, "FOO\tbar\n")
    .penalty_client(3)
    .send(
        3,
        "CONNECT\t1\tp/1\nLOOKUP\tp/1\nCONNECT-DUMP\textra\nPENALTY-DUMP\tx\n",
    )
    .client(4)
    .send(
        4,
        "PENALTY-INC\t1.1.1.1\t0\t1\nPENALTY-GET\t9.9.9.9\nCONNECT-DUMP\n",
    )
    .send(4, "CONNECT -DUMP\n")
    .close(3)
}

fn errors_keep_earlier_effects() -> Script {
    Script::new(
        "errors-keep-earlier-effects",
        "An error stops a batch: earlier lines' effects and replies stay, later lines in the same\n\
         write are not executed (§4.1, [live X1/X2]).",
    )
    .client(1)
    .send(1, "CONNECT\t1\tx\nLOOKUP\tx\nBOGUS\nLOOKUP\tx\nCONNECT\t2\tx\n")
    .client(2)
    .send(2, "LOOKUP\tx\nCONNECT-DUMP\n")
    .close(2)
}

fn anvil_restart() -> Script {
    Script::new(
        "anvil-restart",
        "An anvil killed and restarted with ANVIL_RESTARTED=1: state is gone, stale pipe lines\n\
         before the VERSION line are skipped silently, sockets still need a handshake (§1.4).",
    )
    .pipes(1, 2)
    .client(3)
    .send(2, "CONNECT\t10\timap/1.1.1.1/u\n")
    .send(3, "LOOKUP\timap/1.1.1.1/u\n")
    .step(Step::Kill(9))
    .step(Step::Start { restarted: true })
    .open(5, SharedPipe)
    .open(4, MasterPipe)
    .send(5, "CONNECT\t11\timap/1.1.1.1/v\n")
    .send(5, "VERSION\tanvil\t1\t0\n")
    .send(4, "KILL\t12345\nVERSION\tanvil\t1\t0\n")
    .send(5, "CONNECT\t12\timap/1.1.1.1/w\n")
    .client(6)
    .send(
        6,
        "LOOKUP\timap/1.1.1.1/u\nLOOKUP\timap/1.1.1.1/v\nLOOKUP\timap/1.1.1.1/w\n",
    )
    .open(7, Anvil)
    .send(7, "LOOKUP\tx\n")
    .close(6)
}

fn shutdown_master_dead() -> Script {
    Script::new(
        "shutdown-master-dead",
        "When the master dies anvil keeps serving connected clients, sees EOF on the pipes, and\n\
         exits 0 when its last socket client leaves (§1.5).",
    )
    .pipes(1, 2)
    .client(3)
    .send(2, "CONNECT\t10\tpop3/1.1.1.1/u\n")
    .step(Step::MasterDead)
    .close(1)
    .close(2)
    .send(3, "LOOKUP\tpop3/1.1.1.1/u\nCONNECT-DUMP\n")
    .close(3)
    .step(Step::WaitExit)
}

fn pipe_commands() -> Script {
    Script::new(
        "pipe-commands",
        "Commands without replies work on both pipes: CONNECT, DISCONNECT, PENALTY-INC,\n\
         PENALTY-SET-EXPIRE-SECS; KILL only on the master pipe (§4.3).",
    )
    .pipes(1, 2)
    .send(1, "CONNECT\t1\tm/1\nPENALTY-INC\tpm\t0\t3\n")
    .send(2, "CONNECT\t2\ts/1\nCONNECT\t2\ts/1\nDISCONNECT\t2\ts/1\nPENALTY-INC\tps\t5\t4\nPENALTY-SET-EXPIRE-SECS\t100\n")
    .client(3)
    .send(3, "CONNECT-DUMP\nPENALTY-GET\tpm\nPENALTY-GET\tps\n")
    .send(1, "KILL\t2\n")
    .send(3, "CONNECT-DUMP\n")
    .close(3)
}

fn many_sessions_dump() -> Script {
    let mut lines = String::new();
    for n in 0..36u32 {
        let pid = 1000 + n % 6;
        let user = ["alice", "bob", "carol", "dave", "eve"][(n % 5) as usize];
        let proto = if n % 3 == 0 { "pop3" } else { "imap" };
        lines.push_str(&format!(
            "CONNECT\t{pid}\t{proto}/10.0.0.{}/{user}\n",
            n % 4
        ));
    }
    Script::new(
        "many-sessions-dump",
        "A larger CONNECT-DUMP (hash order: compared as a multiset), before and after a KILL.",
    )
    .pipes(1, 2)
    .send(2, lines)
    .client(3)
    .send(3, "CONNECT-DUMP\n")
    .send(1, "KILL\t1003\n")
    .send(3, "CONNECT-DUMP\nLOOKUP\timap/10.0.0.1/bob\n")
    .close(3)
}

use super::live::{Ctx, LiveScenario};
use anyhow::Context as _;
use nix::sys::signal::Signal;

/// Every scenario of real traffic, in corpus order.
pub fn live_scenarios() -> Vec<LiveScenario> {
    vec![
        LiveScenario {
            name: "live-imap-login-logout",
            about: "An IMAP login and logout: imap-login's LOOKUP, auth's PENALTY-GET, the imap\n\
                    process's CONNECT/DISCONNECT on the shared pipe; then dovecot stops.",
            userip_limit: None,
            run: imap_login_logout,
        },
        LiveScenario {
            name: "live-pop3-login-logout",
            about: "A POP3 login and QUIT, then dovecot stops.",
            userip_limit: None,
            run: pop3_login_logout,
        },
        LiveScenario {
            name: "live-userip-limit",
            about: "mail_max_userip_connections = 2: a third IMAP login of alice from the same IP\n\
                    is refused after LOOKUP returns 2; bob still gets in.",
            userip_limit: Some(2),
            run: userip_limit,
        },
        LiveScenario {
            name: "live-auth-penalty",
            about: "Failed POP3 and IMAP logins raise the auth penalty (PENALTY-INC with a password\n\
                    checksum, the same wrong password again, a second one), a successful login resets\n\
                    it, doveadm penalty dumps it.",
            userip_limit: None,
            run: auth_penalty,
        },
        LiveScenario {
            name: "live-doveadm-who",
            about: "doveadm who and who -1 (CONNECT-DUMP) with IMAP and POP3 sessions of two users.",
            userip_limit: None,
            run: doveadm_who,
        },
        LiveScenario {
            name: "live-doveadm-kick",
            about: "doveadm kick alice: CONNECT-DUMP, SIGTERM to her imap processes, their\n\
                    DISCONNECTs; bob's session stays.",
            userip_limit: None,
            run: doveadm_kick,
        },
        LiveScenario {
            name: "live-killed-mail-process",
            about: "An imap process killed with SIGKILL: the master writes KILL <pid> to the master\n\
                    pipe and the session disappears from the dump.",
            userip_limit: None,
            run: killed_mail_process,
        },
        LiveScenario {
            name: "live-anvil-crash-restart",
            about: "The stock anvil is killed (SIGKILL) with a session open: the master restarts it with\n\
                    ANVIL_RESTARTED=1, writes KILL <old pid> and VERSION to the master pipe; the old\n\
                    session's DISCONNECT is unknown to the new anvil.",
            userip_limit: None,
            run: anvil_crash_restart,
        },
        LiveScenario {
            name: "live-reload",
            about: "A SIGHUP reload with a session open: anvil is not restarted, its pipes get no new\n\
                    VERSION line, sessions before and after the reload are counted together.",
            userip_limit: None,
            run: reload,
        },
        LiveScenario {
            name: "live-shutdown-with-client",
            about: "dovecot stops while an anvil client is connected: anvil keeps answering it and\n\
                    exits 0 once it disconnects.",
            userip_limit: None,
            run: shutdown_with_client,
        },
    ]
}

fn imap_login_logout(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut c = ctx.dovecot.imap()?;
    anyhow::ensure!(c.login("alice", "secret")?.is_ok(), "login failed");
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 1)?;
    ctx.settle();
    c.logout()?;
    ctx.wait_raw("shared-pipe client->anvil DISCONNECT", 1)?;
    ctx.settle();
    Ok(())
}

fn pop3_login_logout(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut c = ctx.dovecot.pop3()?;
    let r = c.login("bob", "secret")?;
    anyhow::ensure!(r.starts_with("+OK"), "login failed: {r}");
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 1)?;
    ctx.settle();
    c.quit()?;
    ctx.wait_raw("shared-pipe client->anvil DISCONNECT", 1)?;
    ctx.settle();
    Ok(())
}

fn userip_limit(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut sessions = Vec::new();
    for n in 1..=2 {
        let mut c = ctx.dovecot.imap()?;
        anyhow::ensure!(c.login("alice", "secret")?.is_ok(), "login {n} failed");
        ctx.wait_raw("shared-pipe client->anvil CONNECT", n)?;
        ctx.settle();
        sessions.push(c);
    }
    let mut third = ctx.dovecot.imap()?;
    let r = third.login("alice", "secret")?;
    anyhow::ensure!(!r.is_ok(), "the third login should be refused: {r:?}");
    ctx.settle();
    drop(third);
    let mut b = ctx.dovecot.imap()?;
    anyhow::ensure!(b.login("bob", "secret")?.is_ok(), "bob's login failed");
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 3)?;
    ctx.settle();
    b.logout()?;
    for c in sessions {
        c.logout()?;
    }
    ctx.wait_raw("shared-pipe client->anvil DISCONNECT", 3)?;
    ctx.settle();
    Ok(())
}

fn auth_penalty(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut p = ctx.dovecot.pop3()?;
    let r = p.login("alice", "wrong")?;
    anyhow::ensure!(r.starts_with("-ERR"), "wrong password accepted: {r}");
    ctx.settle();
    let r = p.login("alice", "wrong")?;
    anyhow::ensure!(r.starts_with("-ERR"), "wrong password accepted: {r}");
    ctx.settle();
    let mut i = ctx.dovecot.imap()?;
    anyhow::ensure!(
        !i.login("alice", "other-wrong")?.is_ok(),
        "wrong password accepted"
    );
    ctx.settle();
    ctx.doveadm(&["penalty"])?;
    anyhow::ensure!(i.login("alice", "secret")?.is_ok(), "login failed");
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 1)?;
    ctx.settle();
    ctx.doveadm(&["penalty"])?;
    i.logout()?;
    p.abort();
    ctx.wait_raw("shared-pipe client->anvil DISCONNECT", 1)?;
    ctx.settle();
    Ok(())
}

fn doveadm_who(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut a1 = ctx.dovecot.imap()?;
    anyhow::ensure!(a1.login("alice", "secret")?.is_ok(), "login failed");
    let mut a2 = ctx.dovecot.imap()?;
    anyhow::ensure!(a2.login("alice", "secret")?.is_ok(), "login failed");
    let mut b = ctx.dovecot.pop3()?;
    anyhow::ensure!(b.login("bob", "secret")?.starts_with("+OK"), "login failed");
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 3)?;
    ctx.settle();
    let who = ctx.doveadm(&["who"])?;
    anyhow::ensure!(who.contains("alice") && who.contains("bob"), "who: {who}");
    ctx.doveadm(&["who", "-1"])?;
    ctx.doveadm(&["who", "alice"])?;
    a1.logout()?;
    a2.logout()?;
    b.quit()?;
    ctx.wait_raw("shared-pipe client->anvil DISCONNECT", 3)?;
    ctx.settle();
    ctx.doveadm(&["who"])?;
    Ok(())
}

fn doveadm_kick(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut a = ctx.dovecot.imap()?;
    anyhow::ensure!(a.login("alice", "secret")?.is_ok(), "login failed");
    let mut b = ctx.dovecot.imap()?;
    anyhow::ensure!(b.login("bob", "secret")?.is_ok(), "login failed");
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 2)?;
    ctx.settle();
    ctx.doveadm(&["kick", "alice"])?;
    ctx.wait_raw("shared-pipe client->anvil DISCONNECT", 1)?;
    ctx.settle();
    ctx.doveadm(&["who", "-1"])?;
    a.abort();
    b.logout()?;
    ctx.wait_raw("shared-pipe client->anvil DISCONNECT", 2)?;
    ctx.settle();
    Ok(())
}

fn killed_mail_process(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut a = ctx.dovecot.imap()?;
    anyhow::ensure!(a.login("alice", "secret")?.is_ok(), "login failed");
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 1)?;
    ctx.settle();
    let pid = ctx.mail_process("imap")?;
    ctx.signal(pid, Signal::SIGKILL)?;
    ctx.wait_raw("master-pipe client->anvil KILL", 1)?;
    ctx.settle();
    ctx.doveadm(&["who", "-1"])?;
    a.abort();
    ctx.settle();
    Ok(())
}

fn anvil_crash_restart(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut a = ctx.dovecot.imap()?;
    anyhow::ensure!(a.login("alice", "secret")?.is_ok(), "login failed");
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 1)?;
    ctx.settle();
    let anvil = ctx.stock_anvil()?;
    ctx.signal(anvil, Signal::SIGKILL)?;
    ctx.wait_raw("- process start restarted", 1)?;
    ctx.wait_raw("shared-pipe client->anvil VERSION", 2)?;
    ctx.settle();
    ctx.doveadm(&["who", "-1"])?;
    a.logout()?;
    ctx.wait_raw("shared-pipe client->anvil DISCONNECT", 1)?;
    ctx.settle();
    // A new login: a fresh imap-login process, and auth may have to reconnect.
    let mut b = ctx.dovecot.imap()?;
    let _ = b.login("bob", "secret")?;
    ctx.settle();
    let mut b2 = ctx.dovecot.imap()?;
    let ok = b2.login("bob", "secret")?.is_ok();
    ctx.settle();
    ctx.doveadm(&["who", "-1"])?;
    b.abort();
    if ok {
        b2.logout()?;
    }
    ctx.settle();
    Ok(())
}

fn reload(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut a = ctx.dovecot.imap()?;
    anyhow::ensure!(a.login("alice", "secret")?.is_ok(), "login failed");
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 1)?;
    ctx.settle();
    let master = ctx.dovecot.pid().context("no master")?;
    ctx.signal(master, Signal::SIGHUP)?;
    std::thread::sleep(Duration::from_secs(1));
    ctx.settle();
    let mut b = ctx.dovecot.imap()?;
    anyhow::ensure!(
        b.login("alice", "secret")?.is_ok(),
        "login after reload failed"
    );
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 2)?;
    ctx.settle();
    ctx.doveadm(&["who"])?;
    a.logout()?;
    b.logout()?;
    ctx.wait_raw("shared-pipe client->anvil DISCONNECT", 2)?;
    ctx.settle();
    Ok(())
}

fn shutdown_with_client(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut a = ctx.dovecot.imap()?;
    anyhow::ensure!(a.login("alice", "secret")?.is_ok(), "login failed");
    ctx.wait_raw("shared-pipe client->anvil CONNECT", 1)?;
    ctx.settle();
    let mut client = ctx.dovecot.anvil_client()?;
    let _ = client.request(b"LOOKUP\timap/127.0.0.1/alice")?;
    ctx.settle();
    a.abort();
    ctx.settle();
    ctx.dovecot.stop()?;
    ctx.wait_raw("- process master-dead", 1)?;
    ctx.settle();
    let _ = client.request(b"LOOKUP\timap/127.0.0.1/alice")?;
    let _ = client.dump(b"CONNECT-DUMP")?;
    drop(client);
    ctx.settle();
    Ok(())
}

//! Issue 15's "done when": no acknowledged write is lost across replica and etcd member
//! kills (docs/design/scale-out.md §9, test 4). Three `meshwork control` processes share a
//! 3-member etcd cluster (real `etcd` on loopback; skipped with a message when Debian's
//! etcd-server is missing, failed under CI=true). Writers put entries and create join
//! tokens through random replicas while replicas are `kill -9`ed and restarted and etcd
//! members die (one at a time, and once two at once). Every write whose command exited 0
//! was acknowledged; at the end each acknowledged entry must be listed, with its spec, by
//! every replica, each acknowledged token's record must be in etcd, and a sample of the
//! tokens must admit exactly one agent. Failed writes may or may not have applied (the
//! client cannot know), so nothing is asserted about them beyond their existence: writes
//! issued during the quorum loss must have been refused (and none acknowledged), and the
//! run must have killed replicas and acknowledged writes, or it tested nothing.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use testkit::etcd::EtcdCluster;

#[path = "acknowledged_writes/fleet.rs"]
mod fleet;

use crate::harness::eventually;
use fleet::{COMMAND_LIMIT, Fleet, REPLICAS, admin};

/// The example's trust domain, and so the default etcd prefix's last part.
const TRUST_DOMAIN: &str = "meshwork.local";
const WRITERS: usize = 3;
/// A replica is killed this often (and restarted at once) while etcd chaos runs.
const REPLICA_KILL_EVERY: Duration = Duration::from_secs(3);
/// How many acknowledged tokens are redeemed at the end (each twice).
const JOIN_SAMPLE: usize = 40;

/// What a writer did once.
struct Attempt {
    start: Instant,
    end: Instant,
    /// The write, if its command exited 0.
    acked: Option<Write>,
    /// The command failed naming the store as unavailable (no quorum).
    unavailable: bool,
    /// The command ran past [`COMMAND_LIMIT`].
    hung: bool,
}

enum Write {
    /// An entry id; its spec follows from it ([`entry_spec`]).
    Entry(String),
    /// A join token.
    Token(String),
}

/// The SPIFFE ID and selector the writers give entry `id`.
fn entry_spec(id: &str) -> (String, String) {
    (
        format!("spiffe://{TRUST_DOMAIN}/chaos/{id}"),
        format!("unix:path:/chaos/{id}"),
    )
}

/// Writes through random replicas until `stop`: entries and tokens, alternately (after a
/// failure, e.g. a dead replica's missing socket, only after a pause: no busy loop).
fn writer(w: usize, states: &[PathBuf], seed: u64, stop: &AtomicBool, log: &Mutex<Vec<Attempt>>) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let state = &states[rng.random_range(0..states.len())];
        let attempt = write_once(state, &format!("chaos-w{w}-{n}"), n.is_multiple_of(2));
        if attempt.acked.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        log.lock().unwrap().push(attempt);
        n += 1;
    }
}

/// Puts entry `id` (or, if not `entry`, creates a token) through the replica at `state`.
fn write_once(state: &Path, id: &str, entry: bool) -> Attempt {
    let (spiffe_id, selector) = entry_spec(id);
    let args = match entry {
        true => vec![
            "entry",
            "create",
            id,
            "--spiffe-id",
            &spiffe_id,
            "--selector",
            &selector,
        ],
        false => vec!["token", "create", "--ttl", "1h"],
    };
    let start = Instant::now();
    let out = admin(state, &args);
    let end = Instant::now();
    let Some(out) = out else {
        let (acked, unavailable, hung) = (None, false, true);
        return Attempt {
            start,
            end,
            acked,
            unavailable,
            hung,
        };
    };
    let acked = match (out.status.success(), entry) {
        (false, _) => None,
        (true, true) => Some(Write::Entry(id.to_owned())),
        (true, false) => {
            let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert!(
                !token.is_empty(),
                "token create exited 0 without a token: {out:?}"
            );
            Some(Write::Token(token))
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unavailable = acked.is_none() && stderr.contains("unavailable");
    Attempt {
        start,
        end,
        acked,
        unavailable,
        hung: false,
    }
}

/// Kills a random replica every [`REPLICA_KILL_EVERY`] and restarts it at once, until
/// `done`; a replica that exits by itself is restarted too. A restart does not wait for
/// the socket: the next kill may hit a replica still opening its store (connecting,
/// loading its cache), which a crash loop meets too and a gentler schedule never would;
/// the final checks wait for every replica. How many live replicas were killed, and how
/// many restarts followed a replica's own exit.
fn replica_chaos(fleet: &Fleet, seed: u64, done: &AtomicBool) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut next = Instant::now() + REPLICA_KILL_EVERY / 2;
    let (mut kills, mut exits) = (0, 0);
    while !done.load(Ordering::Relaxed) {
        if Instant::now() >= next {
            let i = rng.random_range(0..REPLICAS);
            kills += usize::from(fleet.kill(i));
            fleet.spawn(i);
            next += REPLICA_KILL_EVERY;
        }
        for i in 0..REPLICAS {
            exits += usize::from(fleet.supervise(i));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (kills, exits)
}

/// What the etcd chaos did.
struct EtcdChaos {
    kills: usize,
    /// From when both members of the quorum loss were dead until their restarts began.
    outage: (Instant, Instant),
}

/// One member down for 3 s at a time, every ~5 s (the leader the first time, so the
/// writes ride out an election), and once two at once: 2 s, 8 s (two), then 2 s after
/// the quorum is back, twice.
fn etcd_chaos(etcd: &mut EtcdCluster, seed: u64, log: &Mutex<Vec<Attempt>>) -> EtcdChaos {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xe7cd);
    let pause = |secs| std::thread::sleep(Duration::from_secs(secs));
    pause(2);
    let leader = leader(&etcd.endpoints());
    one_member_down(etcd, leader.unwrap_or_else(|| rng.random_range(0..3)));
    eprintln!("acknowledged_writes: the first etcd kill hit the leader: {leader:?}");
    pause(3);
    let outage = quorum_loss(etcd, rng.random_range(0..3), log);
    for _ in 0..2 {
        pause(2);
        one_member_down(etcd, rng.random_range(0..3));
    }
    EtcdChaos { kills: 5, outage }
}

/// Kills every member but `spared` and restarts them once a write begun after the kills
/// has been refused as `store_unavailable` (at least 4 s, at most 20 s): a write issued
/// into the quorum loss, not one caught by it, must have failed, so the run cannot pass
/// without the loss having been felt. When the kills were done and the restarts began.
fn quorum_loss(
    etcd: &mut EtcdCluster,
    spared: usize,
    log: &Mutex<Vec<Attempt>>,
) -> (Instant, Instant) {
    let down: Vec<usize> = (0..3).filter(|m| *m != spared).collect();
    for &m in &down {
        etcd.kill(m);
    }
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let felt = || {
        let attempts = log.lock().unwrap();
        attempts.iter().any(|a| a.unavailable && a.start >= from)
    };
    while !felt() && from.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let until = Instant::now();
    for &m in &down {
        etcd.restart(m)
            .unwrap_or_else(|e| panic!("restarting etcd member {m}: {e}"));
    }
    (from, until)
}

/// The index of the etcd leader among `endpoints` (`etcdctl endpoint status`).
fn leader(endpoints: &[String]) -> Option<usize> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoints.join(",")])
        .args(["endpoint", "status", "-w", "json"])
        .output()
        .ok()?;
    let members: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    members.as_array()?.iter().find_map(|m| {
        let status = &m["Status"];
        let is_leader = status["leader"].as_u64()? == status["header"]["member_id"].as_u64()?;
        let endpoint = m["Endpoint"].as_str()?;
        is_leader.then(|| endpoints.iter().position(|e| e == endpoint))?
    })
}

/// Kills etcd member `m`, waits 3 s and starts it again on its data.
fn one_member_down(etcd: &mut EtcdCluster, m: usize) {
    etcd.kill(m);
    std::thread::sleep(Duration::from_secs(3));
    etcd.restart(m)
        .unwrap_or_else(|e| panic!("restarting etcd member {m}: {e}"));
}

/// Sets both flags when dropped, so that the writers and the replica chaos end even if
/// the etcd chaos panics (a scope waits for its threads).
struct StopAll<'a>(&'a AtomicBool, &'a AtomicBool);

impl Drop for StopAll<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        self.1.store(true, Ordering::Relaxed);
    }
}

#[test]
fn no_acknowledged_write_is_lost_across_replica_and_member_kills() {
    let Some(mut etcd) = EtcdCluster::start_or_skip(3) else {
        return;
    };
    let fleet = Fleet::start(etcd.endpoints());
    let seed: u64 = rand::random();
    eprintln!("acknowledged_writes: seed {seed}");
    let log = Mutex::new(Vec::new());
    let (stop, done) = (AtomicBool::new(false), AtomicBool::new(false));
    let started = Instant::now();
    let (chaos, (replica_kills, self_exits)) = std::thread::scope(|s| {
        let _stop_all = StopAll(&stop, &done);
        for w in 0..WRITERS {
            let (states, stop, log) = (&fleet.states, &stop, &log);
            s.spawn(move || writer(w, states, seed, stop, log));
        }
        let replicas = s.spawn(|| replica_chaos(&fleet, seed, &done));
        let chaos = etcd_chaos(&mut etcd, seed, &log);
        done.store(true, Ordering::Relaxed);
        let kills = replicas.join().expect("replica chaos");
        (chaos, kills)
    });
    let attempts = log.into_inner().unwrap();
    report(
        &attempts,
        &chaos,
        replica_kills,
        self_exits,
        started.elapsed(),
    );

    // Everything back: every replica serves reads and writes (so that a join below
    // cannot meet a store still recovering), and every acknowledged write is there.
    for i in 0..REPLICAS {
        fleet.wait_serving(i, Duration::from_secs(60));
        eventually(
            "writes through every replica",
            Duration::from_secs(30),
            || admin(&fleet.states[i], &["token", "create"]).is_some_and(|o| o.status.success()),
        );
    }
    let acked = |token: bool| -> Vec<&str> {
        attempts
            .iter()
            .filter_map(|a| match (&a.acked, token) {
                (Some(Write::Entry(id)), false) => Some(id.as_str()),
                (Some(Write::Token(t)), true) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    };
    check_entries(&fleet, &acked(false));
    check_token_records(&fleet.endpoints, &acked(true));
    check_joins(&fleet, &acked(true));
}

/// Prints what the run did and asserts it exercised what it claims: replicas died,
/// writes failed while etcd had no quorum (and none started then was acknowledged),
/// and enough writes were acknowledged to check.
fn report(
    attempts: &[Attempt],
    chaos: &EtcdChaos,
    replica_kills: usize,
    self_exits: usize,
    took: Duration,
) {
    let count = |f: &dyn Fn(&Attempt) -> bool| attempts.iter().filter(|a| f(a)).count();
    let entries = count(&|a| matches!(a.acked, Some(Write::Entry(_))));
    let tokens = count(&|a| matches!(a.acked, Some(Write::Token(_))));
    let failed = count(&|a| a.acked.is_none());
    let unavailable = count(&|a| a.unavailable);
    let (from, until) = chaos.outage;
    // Issued into the quorum loss: begun after the kills, ended before the restarts.
    let within = |a: &Attempt| a.start >= from && a.end < until;
    let refused_in_outage = count(&|a| within(a) && a.unavailable);
    let acked_without_quorum = count(&|a| within(a) && a.acked.is_some());
    eprintln!(
        "acknowledged_writes: {} writes in {took:.1?}: acknowledged {entries} entries and \
         {tokens} tokens; failed {failed} ({unavailable} as store_unavailable); {} begun \
         and ended within the {:.1?} quorum loss ({refused_in_outage} store_unavailable, \
         {acked_without_quorum} acknowledged); killed {replica_kills} replicas (and \
         restarted {self_exits} that exited by themselves) and {} etcd members",
        attempts.len(),
        count(&within),
        until - from,
        chaos.kills
    );
    assert_eq!(
        count(&|a| a.hung),
        0,
        "an admin command ran past {COMMAND_LIMIT:?} (its own timeout is 10 s)"
    );
    assert_eq!(
        acked_without_quorum, 0,
        "writes begun and acknowledged while two of three etcd members were dead"
    );
    assert!(replica_kills >= 5, "only {replica_kills} replica kills");
    assert!(
        refused_in_outage > 0,
        "no write issued during the quorum loss was refused as store_unavailable"
    );
    assert!(
        entries >= 5 && tokens >= 5,
        "too few acknowledged writes to check ({entries} entries, {tokens} tokens)"
    );
}

/// Every acknowledged entry, with its spec, in every replica's `entry list` (within 30 s:
/// a restarted replica may still be catching up).
fn check_entries(fleet: &Fleet, acked: &[&str]) {
    for (i, state) in fleet.states.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let missing = missing_entries(state, acked);
            if missing.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let in_etcd = etcd_keys(&fleet.endpoints, "entries");
                let stored: Vec<&String> =
                    missing.iter().filter(|m| in_etcd.contains(*m)).collect();
                panic!(
                    "replica r{i} does not list {} of {} acknowledged entries: {:?} \
                     (of these, in etcd: {stored:?}); its log:\n{}",
                    missing.len(),
                    acked.len(),
                    &missing[..missing.len().min(20)],
                    fleet.log_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The acknowledged entries `entry list` through `state` lacks or lists with another spec.
fn missing_entries(state: &Path, acked: &[&str]) -> Vec<String> {
    let Some(out) = admin(state, &["entry", "list"]).filter(|o| o.status.success()) else {
        return vec!["(entry list failed)".to_owned()];
    };
    let listed: BTreeSet<(String, String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (id, spiffe_id) = (fields.next()?.to_owned(), fields.next()?.to_owned());
            Some((id, spiffe_id, fields.collect::<Vec<_>>().join(" ")))
        })
        .collect();
    acked
        .iter()
        .filter(|id| {
            let (spiffe_id, selector) = entry_spec(id);
            !listed.contains(&(id.to_string(), spiffe_id, selector))
        })
        .map(|id| id.to_string())
        .collect()
}

/// The keys of `table` in etcd (under the default prefix).
fn etcd_keys(endpoints: &[String], table: &str) -> BTreeSet<String> {
    let prefix = format!("/meshwork/{TRUST_DOMAIN}/{table}/");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &endpoints.join(","),
            "get",
            "--prefix",
            "--keys-only",
        ])
        .arg(&prefix)
        .output()
        .expect("etcdctl (Debian: etcd-client)");
    assert!(out.status.success(), "etcdctl get: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every acknowledged token's record (keyed by its SHA-256) is in etcd.
fn check_token_records(endpoints: &[String], acked: &[&str]) {
    let stored = etcd_keys(endpoints, "join_tokens");
    let lost: Vec<&&str> = acked
        .iter()
        .filter(|t| !stored.contains(&sha256_hex(t)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged tokens have no record in etcd",
        lost.len(),
        acked.len()
    );
}

/// A sample of the acknowledged tokens (evenly spread, at most [`JOIN_SAMPLE`]) each admit
/// one agent through one replica and are refused as used through the next: the record
/// is not only there but works, exactly once. (Every token's record is checked by
/// [`check_token_records`]; joining each would add seconds for no more coverage.)
fn check_joins(fleet: &Fleet, acked: &[&str]) {
    let addrs: Vec<String> = fleet
        .states
        .iter()
        .map(|s| std::fs::read_to_string(s.join("node-api.addr")).expect("node-api.addr"))
        .collect();
    let agent: identity::SpiffeId = format!("spiffe://{TRUST_DOMAIN}/chaos-agent")
        .parse()
        .expect("id");
    let csr = identity::SvidKey::generate()
        .expect("key")
        .csr_pem(&agent)
        .expect("csr");
    let step = acked.len().div_ceil(JOIN_SAMPLE).max(1);
    for (k, token) in acked.iter().step_by(step).enumerate() {
        let (first, second) = (&addrs[k % REPLICAS], &addrs[(k + 1) % REPLICAS]);
        let (code, json) = join(first.trim(), token, &csr);
        assert_eq!(code, 200, "an acknowledged token did not join: {json}");
        let id = format!(
            "spiffe://{TRUST_DOMAIN}/meshwork/agent/join_token/{}",
            &sha256_hex(token)[..16]
        );
        assert_eq!(json["spiffe_id"], id.as_str(), "{json}");
        let (code, json) = join(second.trim(), token, &csr);
        assert_eq!(
            (code, json["error"].as_str()),
            (403, Some("join_refused")),
            "a token joined twice: {json}"
        );
        let why = json["description"].as_str().unwrap_or_default();
        assert!(why.contains("already used"), "{json}");
    }
}

/// `POST /v1/node/join` (the only node API route that takes no client certificate; the
/// server's own certificate is not what this test is about, hence `-k`).
fn join(addr: &str, token: &str, csr_pem: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "token": token, "csr_pem": csr_pem }).to_string();
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "15", "-w", "\n%{http_code}"])
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
        ])
        .arg(format!("https://{addr}/v1/node/join"))
        .output()
        .expect("curl");
    crate::curl_json(&out)
}

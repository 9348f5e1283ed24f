//! billing's charges. With `DATABASE_URL` set — `meshwork up` delivers it from the
//! `ServiceClaim` bound to billing — each charge is a row of a `charges` table in that
//! PostgreSQL database (created if missing) and its id is the row's. Without it, charges are
//! counted in memory, so directories without a claim still run the demo.
//!
//! Replicas (`spec.replicas`): every replica gets the same binding, so with a database all
//! of them write to the one table and ids stay unique and increasing whichever replica
//! answers. Memory is per process: there, each replica counts on its own, and the ids of replicas
//! above 0 carry the replica (`ch_1_5`: replica 1's fifth charge) so two replicas never
//! hand out the same id. Every answer says which replica made it (`replica`, and the `x-demo-replica` header).
//!
//! Like a payments API, `POST /charges` honours `Idempotency-Key`: a key seen before returns
//! the charge it made (`"replayed": true`) instead of charging twice — which is what lets the
//! mesh retry such POSTs (docs/resiliency.md). `GET /charges/{row_id}` reads one charge and
//! `GET /charges?amount=N` counts the charges of that amount (how the end-to-end tests see how
//! many times billing acted on a request). `DEMO_FAIL_STATUS=503` (failure drills) answers every
//! `/charges` request with that status.
//!
//! With `STRIPE_URL` set, a new charge is also charged at Stripe (`stripe_client`) after it is
//! recorded, and the answer says how that went: `"stripe": {"id": "ch_…"}` or
//! `"stripe": {"error": "…"}` — a failed Stripe call never fails the charge. A replay does not
//! call Stripe again: it answers the Stripe id the first request got (`null` if that failed).

use std::collections::HashMap;

use anyhow::Context;
use serde_json::json;
use tokio::sync::{Mutex, OnceCell};
use tokio_postgres::{Client, NoTls};

use super::stripe_client;
use super::web::{Reply, Request};

/// Replicas start together, and two concurrent `CREATE TABLE IF NOT EXISTS` race in
/// PostgreSQL (the loser fails on `pg_type`'s unique index): a transaction-scoped advisory
/// lock makes them take turns.
const SCHEMA: &str = "BEGIN;
SELECT pg_advisory_xact_lock(hashtext('meshwork demo: charges schema'));
CREATE TABLE IF NOT EXISTS charges (
    id bigserial PRIMARY KEY,
    amount bigint NOT NULL,
    caller text,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE charges ADD COLUMN IF NOT EXISTS idempotency_key text UNIQUE;
ALTER TABLE charges ADD COLUMN IF NOT EXISTS stripe_id text;
COMMIT;";

/// Charges kept in memory (no database): amounts by number, keys already used, and the
/// Stripe ids of the charges Stripe accepted.
#[derive(Default)]
struct Memory {
    amounts: Vec<i64>,
    keys: HashMap<String, i64>,
    stripe_ids: HashMap<i64, String>,
}

/// Where charges are kept.
enum Store {
    Memory(Mutex<Memory>),
    /// The URL holds the binding's password: it is never printed.
    Postgres {
        url: String,
        client: Box<Mutex<Client>>,
    },
}

static STORE: OnceCell<Store> = OnceCell::const_new();

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to the database in DATABASE_URL")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("database connection ended: {e}");
        }
    });
    client
        .batch_execute(SCHEMA)
        .await
        .context("creating the charges table")?;
    Ok(client)
}

/// Picks the store (connecting and creating the table when `DATABASE_URL` is set).
pub async fn init() -> anyhow::Result<()> {
    let store = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let client = connect(&url).await?;
            println!("charges are stored in PostgreSQL (DATABASE_URL)");
            Store::Postgres {
                url,
                client: Box::new(Mutex::new(client)),
            }
        }
        Err(_) => {
            println!("charges are kept in memory (no DATABASE_URL)");
            Store::Memory(Mutex::default())
        }
    };
    let _ = STORE.set(store);
    Ok(())
}

/// The charge's amount: the JSON body's `amount`, 1000 when there is none.
fn amount(req: &Request) -> i64 {
    serde_json::from_slice::<serde_json::Value>(&req.body)
        .ok()
        .and_then(|v| v["amount"].as_i64())
        .unwrap_or(1000)
}

/// A stored charge: its row id, whether an earlier request with the same key made it, and
/// (for a replay) the Stripe id that request got.
struct Stored {
    id: i64,
    replayed: bool,
    stripe_id: Option<String>,
}

async fn insert(
    client: &Client,
    amount: i64,
    caller: Option<&str>,
    key: Option<&str>,
) -> anyhow::Result<Stored> {
    // A key seen before matches the existing row; `xmax <> 0` tells the update apart.
    let row = client
        .query_one(
            "INSERT INTO charges (amount, caller, idempotency_key) VALUES ($1, $2, $3)
             ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
             RETURNING id, (xmax <> 0) AS replayed, stripe_id",
            &[&amount, &caller, &key],
        )
        .await?;
    Ok(Stored {
        id: row.get(0),
        replayed: row.get(1),
        stripe_id: row.get(2),
    })
}

/// A client whose session is alive: one fresh connection when the server ended it.
async fn session<'a>(
    url: &str,
    client: &'a Mutex<Client>,
) -> anyhow::Result<tokio::sync::MutexGuard<'a, Client>> {
    let mut client = client.lock().await;
    if client.is_closed() {
        *client = connect(url).await?;
    }
    Ok(client)
}

fn remember(memory: &mut Memory, amount: i64, key: Option<&str>) -> Stored {
    if let Some(&id) = key.and_then(|k| memory.keys.get(k)) {
        let stripe_id = memory.stripe_ids.get(&id).cloned();
        return Stored {
            id,
            replayed: true,
            stripe_id,
        };
    }
    memory.amounts.push(amount);
    let id = i64::try_from(memory.amounts.len()).unwrap_or(i64::MAX);
    if let Some(key) = key {
        memory.keys.insert(key.to_owned(), id);
    }
    Stored {
        id,
        replayed: false,
        stripe_id: None,
    }
}

/// The failure drill's status (`DEMO_FAIL_STATUS`), if one is set.
fn drill() -> Option<u16> {
    std::env::var("DEMO_FAIL_STATUS").ok()?.parse().ok()
}

fn unavailable(e: anyhow::Error) -> Reply {
    let body = json!({"error": "database_unavailable", "description": format!("{e:#}")});
    Reply::json(503, body)
}

/// Records a charge (once per key): the stored charge and where it is kept, or the answer
/// to give when it could not be.
async fn store(req: &Request, amount: i64) -> Result<(Stored, &'static str), Reply> {
    let caller = req.client_id.as_deref();
    let key = req.idempotency_key.as_deref();
    match STORE.get() {
        Some(Store::Postgres { url, client }) => {
            let stored = match session(url, client).await {
                Ok(client) => insert(&client, amount, caller, key).await,
                Err(e) => Err(e),
            };
            stored.map(|s| (s, "postgresql")).map_err(unavailable)
        }
        Some(Store::Memory(memory)) => {
            Ok((remember(&mut *memory.lock().await, amount, key), "memory"))
        }
        None => Err(Reply::json(503, json!({"error": "not_ready"}))),
    }
}

/// Keeps the Stripe id of charge `id`, for replays to answer.
async fn keep_stripe_id(id: i64, stripe_id: &str) -> anyhow::Result<()> {
    match STORE.get() {
        Some(Store::Postgres { url, client }) => {
            let client = session(url, client).await?;
            let sql = "UPDATE charges SET stripe_id = $2 WHERE id = $1";
            client.execute(sql, &[&id, &stripe_id]).await?;
        }
        Some(Store::Memory(memory)) => {
            let mut memory = memory.lock().await;
            memory.stripe_ids.insert(id, stripe_id.to_owned());
        }
        None => anyhow::bail!("not ready"),
    }
    Ok(())
}

/// The `stripe` part of the answer, when `STRIPE_URL` is set: charges a new charge at
/// Stripe; a replay answers what the first request got.
async fn charge_at_stripe(
    req: &Request,
    amount: i64,
    stored: &Stored,
) -> Option<serde_json::Value> {
    let url = stripe_client::url()?;
    if stored.replayed {
        return Some(json!({"id": stored.stripe_id, "replayed": true}));
    }
    let key = req.idempotency_key.as_deref();
    let charged = stripe_client::charge(&url, amount, key, &req.trace).await;
    Some(match charged {
        Ok(stripe_id) => match keep_stripe_id(stored.id, &stripe_id).await {
            Ok(()) => json!({"id": stripe_id}),
            Err(e) => json!({"id": stripe_id, "warning": format!("not kept for replays: {e:#}")}),
        },
        Err(e) => {
            eprintln!("charge {}: Stripe failed: {e:#}", stored.id);
            json!({"error": format!("{e:#}")})
        }
    })
}

/// `POST /charges`: records a charge (once per `Idempotency-Key`) and charges it at Stripe
/// when `STRIPE_URL` is set; 201 with its id, 503 when the database fails.
pub async fn create(req: &Request) -> Reply {
    if let Some(status) = drill() {
        return Reply::json(status, json!({"error": "failure_drill"}));
    }
    let amount = amount(req);
    let (stored, stored_in) = match store(req, amount).await {
        Ok(stored) => stored,
        Err(reply) => return reply,
    };
    let id = stored.id;
    let replica = super::web::replica();
    let charge_id = match (stored_in, replica) {
        ("memory", r) if r > 0 => format!("ch_{r}_{id}"),
        _ => format!("ch_{id}"),
    };
    let mut body = json!({
        "id": charge_id,
        "row_id": id,
        "replayed": stored.replayed,
        "replica": replica,
        "amount": amount,
        "status": "succeeded",
        "caller": req.client_id,
        "stored_in": stored_in,
    });
    if let Some(stripe) = charge_at_stripe(req, amount, &stored).await {
        body["stripe"] = stripe;
    }
    Reply::json(201, body)
}

/// `GET /charges/{row_id}` (one charge) and `GET /charges?amount=N` (how many charges of
/// that amount exist).
pub async fn read(req: &Request) -> Reply {
    if let Some(status) = drill() {
        return Reply::json(status, json!({"error": "failure_drill"}));
    }
    let by_amount = req
        .query
        .as_deref()
        .and_then(|q| q.strip_prefix("amount="))
        .and_then(|a| a.parse::<i64>().ok());
    let row_id = req
        .path
        .strip_prefix("/charges/")
        .and_then(|id| id.parse::<i64>().ok());
    let found = match (by_amount, row_id) {
        (Some(amount), None) => count(amount)
            .await
            .map(|n| json!({"amount": amount, "count": n})),
        (None, Some(id)) => match charge(id).await {
            Ok(Some(amount)) => Ok(json!({"row_id": id, "amount": amount})),
            Ok(None) => return Reply::json(404, json!({"error": "no_such_charge", "row_id": id})),
            Err(e) => Err(e),
        },
        _ => {
            return Reply::json(
                400,
                json!({"error": "ask for /charges/ROW_ID or /charges?amount=N"}),
            );
        }
    };
    match found {
        Ok(mut body) => {
            body["replica"] = super::web::replica().into();
            Reply::json(200, body)
        }
        Err(e) => unavailable(e),
    }
}

async fn count(amount: i64) -> anyhow::Result<i64> {
    match STORE.get() {
        Some(Store::Postgres { url, client }) => {
            let client = session(url, client).await?;
            let row = client
                .query_one("SELECT count(*) FROM charges WHERE amount = $1", &[&amount])
                .await?;
            Ok(row.get(0))
        }
        Some(Store::Memory(memory)) => {
            let memory = memory.lock().await;
            let n = memory.amounts.iter().filter(|&&a| a == amount).count();
            Ok(i64::try_from(n).unwrap_or(i64::MAX))
        }
        None => anyhow::bail!("not ready"),
    }
}

async fn charge(id: i64) -> anyhow::Result<Option<i64>> {
    match STORE.get() {
        Some(Store::Postgres { url, client }) => {
            let client = session(url, client).await?;
            let row = client
                .query_opt("SELECT amount FROM charges WHERE id = $1", &[&id])
                .await?;
            Ok(row.map(|r| r.get(0)))
        }
        Some(Store::Memory(memory)) => {
            let memory = memory.lock().await;
            let at = usize::try_from(id - 1).ok();
            Ok(at.and_then(|i| memory.amounts.get(i).copied()))
        }
        None => anyhow::bail!("not ready"),
    }
}

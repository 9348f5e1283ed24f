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

use std::collections::HashMap;

use anyhow::Context;
use serde_json::json;
use tokio::sync::{Mutex, OnceCell};
use tokio_postgres::{Client, NoTls};

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
COMMIT;";

/// Charges kept in memory (no database): amounts by number, and keys already used.
#[derive(Default)]
struct Memory {
    amounts: Vec<i64>,
    keys: HashMap<String, i64>,
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

/// A stored charge: its row id and whether an earlier request with the same key made it.
struct Stored {
    id: i64,
    replayed: bool,
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
             RETURNING id, (xmax <> 0) AS replayed",
            &[&amount, &caller, &key],
        )
        .await?;
    Ok(Stored {
        id: row.get(0),
        replayed: row.get(1),
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
        return Stored { id, replayed: true };
    }
    memory.amounts.push(amount);
    let id = i64::try_from(memory.amounts.len()).unwrap_or(i64::MAX);
    if let Some(key) = key {
        memory.keys.insert(key.to_owned(), id);
    }
    Stored {
        id,
        replayed: false,
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

/// `POST /charges`: records a charge (once per `Idempotency-Key`); 201 with its id, 503
/// when the database fails.
pub async fn create(req: &Request) -> Reply {
    if let Some(status) = drill() {
        return Reply::json(status, json!({"error": "failure_drill"}));
    }
    let amount = amount(req);
    let caller = req.client_id.as_deref();
    let key = req.idempotency_key.as_deref();
    let (stored, stored_in) = match STORE.get() {
        Some(Store::Postgres { url, client }) => {
            let stored = match session(url, client).await {
                Ok(client) => insert(&client, amount, caller, key).await,
                Err(e) => Err(e),
            };
            match stored {
                Ok(stored) => (stored, "postgresql"),
                Err(e) => return unavailable(e),
            }
        }
        Some(Store::Memory(memory)) => (remember(&mut *memory.lock().await, amount, key), "memory"),
        None => return Reply::json(503, json!({"error": "not_ready"})),
    };
    let id = stored.id;
    let replica = super::web::replica();
    let charge_id = match (stored_in, replica) {
        ("memory", r) if r > 0 => format!("ch_{r}_{id}"),
        _ => format!("ch_{id}"),
    };
    Reply::json(
        201,
        json!({
            "id": charge_id,
            "row_id": id,
            "replayed": stored.replayed,
            "replica": replica,
            "amount": amount,
            "status": "succeeded",
            "caller": caller,
            "stored_in": stored_in,
        }),
    )
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

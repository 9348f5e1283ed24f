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

use std::sync::atomic::{AtomicU64, Ordering};

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
COMMIT;";

/// Where charges are kept.
enum Store {
    Memory(AtomicU64),
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
            Store::Memory(AtomicU64::new(0))
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

async fn insert(client: &Client, amount: i64, caller: Option<&str>) -> anyhow::Result<i64> {
    let row = client
        .query_one(
            "INSERT INTO charges (amount, caller) VALUES ($1, $2) RETURNING id",
            &[&amount, &caller],
        )
        .await?;
    Ok(row.get(0))
}

async fn store_row(
    url: &str,
    client: &Mutex<Client>,
    amount: i64,
    caller: Option<&str>,
) -> anyhow::Result<i64> {
    let mut client = client.lock().await;
    if client.is_closed() {
        // The server restarted or ended our session: one fresh connection, then give up.
        *client = connect(url).await?;
    }
    insert(&client, amount, caller).await
}

/// `POST /charges`: records a charge; 201 with its id, 503 when the database fails.
pub async fn create(req: &Request) -> Reply {
    let amount = amount(req);
    let caller = req.client_id.as_deref();
    let (id, stored_in) = match STORE.get() {
        Some(Store::Postgres { url, client }) => match store_row(url, client, amount, caller).await
        {
            Ok(id) => (id, "postgresql"),
            Err(e) => {
                let body =
                    json!({"error": "database_unavailable", "description": format!("{e:#}")});
                return Reply::json(503, body);
            }
        },
        Some(Store::Memory(n)) => {
            let n = n.fetch_add(1, Ordering::Relaxed) + 1;
            (i64::try_from(n).unwrap_or(i64::MAX), "memory")
        }
        None => return Reply::json(503, json!({"error": "not_ready"})),
    };
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
            "replica": replica,
            "amount": amount,
            "status": "succeeded",
            "caller": caller,
            "stored_in": stored_in,
        }),
    )
}

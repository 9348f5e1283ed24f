//! Starting the applications, once their sidecars serve, and waiting for them to listen.

use std::path::Path;
use std::time::Duration;

use super::supervisor::{Child, Supervisor};
use super::{Launch, Pending, claims, isolation, table};
use crate::state::ReadyFile;

/// Each app once its sidecar serves, with its bindings, `PORT`, `MESHWORK_REPLICA` and
/// `HTTP_PROXY` (in a pod: run there, unprivileged, with `MESHWORK_POD_IP` and no proxy
/// variables); waits for its port. A replica's app (of a workload with `replicas` above
/// 1) is restarted when it dies once `up` is ready; a single app's end stops `up`.
pub(super) async fn start_apps(
    sup: &mut Supervisor,
    l: &Launch<'_>,
    pending: Vec<Pending>,
    bindings: &claims::Bindings,
) -> anyhow::Result<Vec<table::Row>> {
    let mut table = Vec::new();
    let mut started = Vec::new();
    for Pending {
        instance,
        ready,
        pod,
    } in pending
    {
        let info = sup
            .wait_for_ready(&format!("{}/proxy", instance.name), &ready, l.timeout)
            .await?;
        let Some(w) = l.set.workload(&instance.workload) else {
            continue;
        };
        let (app, bound) = match &pod {
            Some(pod) => (
                isolation::pod_app(&l.exe, &w.spec.command, &l.dir, pod)?,
                bindings.pod_env_for(&instance.workload),
            ),
            None => (
                Child::app(&l.exe, &w.spec.command, &l.dir).proxy_env(&info.outbound.to_string()),
                bindings.env_for(&instance.workload),
            ),
        };
        let app = app
            .envs(&w.spec.env)
            .envs(&bound)
            .env("PORT", &instance.port.to_string())
            .env("MESHWORK_WORKLOAD", &instance.workload)
            .env("MESHWORK_REPLICA", &instance.replica.to_string())
            .env("MESHWORK_STATE_DIR", &l.state.path().to_string_lossy());
        let app_name = format!("{}/app", instance.name);
        if instance.replicated {
            sup.spawn_restartable(&app_name, app)?;
        } else {
            sup.spawn(&app_name, app)?;
        }
        let app_addr = match &pod {
            Some(pod) => format!("{}:{}", pod.ip, instance.port),
            None => format!("127.0.0.1:{}", instance.port),
        };
        table.push(table::Row {
            name: instance.name.clone(),
            app: app_addr,
            info,
        });
        started.push((instance, ready, pod.is_some()));
    }
    for (instance, ready, in_pod) in &started {
        wait_for_app(sup, l, &instance.name, instance.port, ready, *in_pod).await?;
    }
    Ok(table)
}

/// Waits until `name`'s app listens on `port` (at most `--app-timeout`) and its sidecar
/// has seen it (the ready file's `app_listening`): until then the sidecar answers callers
/// `503 app_starting`, and `up` must not print `ready`. An app in a pod listens where only
/// its sidecar sees it: then the ready file alone tells, within `--app-timeout`.
async fn wait_for_app(
    sup: &mut Supervisor,
    l: &Launch<'_>,
    name: &str,
    port: u16,
    ready: &Path,
    in_pod: bool,
) -> anyhow::Result<()> {
    let since = tokio::time::Instant::now();
    if in_pod {
        return wait_for_sidecar_to_see_app(name, port, ready, l.app_timeout).await;
    }
    if let Err(error) = sup
        .wait_for_port(&format!("{name}/app"), port, l.app_timeout)
        .await
    {
        // The wait fails early only when the app exited; that error names it already.
        if since.elapsed() < l.app_timeout {
            return Err(error);
        }
        anyhow::bail!(
            "workload {name}: app never listened on 127.0.0.1:{port} (waited {}s; see --app-timeout)",
            l.app_timeout.as_secs()
        );
    }
    wait_for_sidecar_to_see_app(name, port, ready, l.timeout).await
}

/// Waits (at most `timeout`) until the ready file says the sidecar saw the app listening.
async fn wait_for_sidecar_to_see_app(
    name: &str,
    port: u16,
    ready: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    // The sidecar probes the port with a backoff capped well under a second.
    let deadline = tokio::time::Instant::now() + timeout;
    while !ReadyFile::read(ready).is_ok_and(|info| info.app_listening) {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "workload {name}: its sidecar did not see the app listening on 127.0.0.1:{port} \
                 within {}s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

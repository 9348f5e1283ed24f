//! The connection to the cluster: a kube [`Client`] from `--kubeconfig FILE`, else from what
//! kube infers (`KUBECONFIG`, `~/.kube/config`, or the in-cluster service account).

use std::path::{Path, PathBuf};

use anyhow::Context;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Where the cluster is, for `meshwork control --kubernetes`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// With --kubernetes: the kubeconfig file to reach the cluster with (its current
    /// context); default: KUBECONFIG, ~/.kube/config, or the in-cluster service account.
    #[arg(long, value_name = "FILE", conflicts_with = "resources")]
    pub kubeconfig: Option<PathBuf>,
    /// With --kubernetes: watch resources in this namespace only (default: every namespace).
    #[arg(long, value_name = "NS", conflicts_with = "resources")]
    pub namespace: Option<String>,
}

/// A client for the cluster `kubeconfig` names, or the one kube infers.
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    // kube's TLS is rustls with ring, like the rest of meshwork.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "finding the cluster: no --kubeconfig, no KUBECONFIG or ~/.kube/config, and not \
             running in a pod",
        )?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_kubeconfig_is_named() {
        let Err(error) = connect(Some(Path::new("/nonexistent/kubeconfig"))).await else {
            panic!("a client without a kubeconfig")
        };
        assert!(
            format!("{error:#}").contains("reading the kubeconfig /nonexistent/kubeconfig"),
            "{error:#}"
        );
    }

    #[tokio::test]
    async fn a_kubeconfig_gives_a_client_for_its_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{name: fake, cluster: {server: 'http://127.0.0.1:9'}}]\n\
             users: [{name: fake, user: {}}]\n\
             contexts: [{name: fake, context: {cluster: fake, user: fake, namespace: shop}}]\n",
        )
        .expect("write");
        let client = connect(Some(&path)).await.expect("client");
        assert_eq!(client.default_namespace(), "shop");
    }
}

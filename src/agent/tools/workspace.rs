//! The gateway's own state as the tools see it: what the file tools refuse ([`Protected`]),
//! and the start-up warning when the configured workspace exposes that state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The gateway's own state, which the file tools refuse wherever the workspace is: writing the
/// configuration file would change the gateway through its hot reload (turning `exec` on, say),
/// and the data directory holds every session's transcript.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    /// The data directory; it and everything under it are refused (empty: none).
    pub data_dir: PathBuf,
    /// The configuration file; refused by identity and, in its directory, by name (empty:
    /// none).
    pub config_file: PathBuf,
}

/// A warning when `workspace` exposes the gateway's own state to the agent: it contains the
/// data directory or the configuration file (the file tools refuse them, but `exec` and other
/// tools can reach them), or it lies inside the data directory without being
/// `<dataDir>/workspace` (the file tools then refuse it entirely).
pub fn workspace_warning(workspace: &Path, data_dir: &Path, config_file: &Path) -> Option<String> {
    let canonical = |p: &Path| -> PathBuf {
        p.canonicalize().unwrap_or_else(|_| {
            // A file that does not exist yet: its directory, canonical, and its name.
            match (
                p.parent().and_then(|d| d.canonicalize().ok()),
                p.file_name(),
            ) {
                (Some(dir), Some(name)) => dir.join(name),
                _ => p.to_path_buf(),
            }
        })
    };
    let (ws, data, config) = (
        canonical(workspace),
        canonical(data_dir),
        canonical(config_file),
    );
    let mut found = Vec::new();
    if data.starts_with(&ws) {
        found.push(format!("the data directory {}", data.display()));
    }
    if config.starts_with(&ws) && !config.starts_with(&data) {
        found.push(format!("the configuration file {}", config.display()));
    }
    if !found.is_empty() {
        return Some(format!(
            "the agent workspace {} contains {}: the file tools refuse it, but exec (when on) \
             and plugins can still reach it; set agent.workspace to a directory outside it",
            ws.display(),
            found.join(" and ")
        ));
    }
    if ws.starts_with(&data) && ws != data.join("workspace") {
        return Some(format!(
            "the agent workspace {} lies inside the data directory {}: the file tools refuse \
             it; set agent.workspace to <dataDir>/workspace or a directory outside the data \
             directory",
            ws.display(),
            data.display()
        ));
    }
    None
}

/// What [`warn_about_workspace`] reads from the application; every
/// [`AgentHost`](crate::agent::AgentHost) is one.
pub trait WorkspaceHost {
    /// The configuration in force.
    fn config(&self) -> Arc<crate::config::Config>;
    /// The data directory.
    fn data_dir(&self) -> &PathBuf;
    /// The config file.
    fn config_path(&self) -> &PathBuf;
}

/// Logs [`workspace_warning`] for the gateway's configured workspace (called at start).
pub fn warn_about_workspace(gw: &impl WorkspaceHost) {
    let config = gw.config();
    let workspace = config
        .default_agent()
        .workspace
        .clone()
        .unwrap_or_else(|| gw.data_dir().join("workspace"));
    if let Some(warning) = workspace_warning(&workspace, gw.data_dir(), gw.config_path()) {
        tracing::warn!("{warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_warns_when_the_workspace_holds_the_gateway_state() {
        let home = tempfile::tempdir().expect("tempdir");
        let data = home.path().join(".clawgate");
        std::fs::create_dir_all(data.join("workspace")).expect("mkdir");
        let config = data.join("clawgate.toml");
        let w = workspace_warning(home.path(), &data, &config).expect("a warning");
        assert!(w.contains("data directory"), "{w}");
        let outside = home.path().join("clawgate.toml");
        let w = workspace_warning(&data.join("workspace"), &data, &outside);
        assert!(w.is_none(), "{w:?}");
        let w = workspace_warning(home.path(), &home.path().join("elsewhere"), &outside)
            .expect("a warning");
        assert!(w.contains("configuration file"), "{w}");
        let w = workspace_warning(&data, &data, &config).expect("a warning");
        assert!(w.contains("data directory"), "{w}");
        std::fs::create_dir_all(data.join("sessions")).expect("mkdir");
        let w = workspace_warning(&data.join("sessions"), &data, &config).expect("a warning");
        assert!(w.contains("inside the data directory"), "{w}");
    }
}

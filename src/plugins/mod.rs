//! Plugins: methods, events and agent tools added to the one method table at run time.
//!
//! In-process plugins implement [`Plugin`] and declare methods with the same descriptors as the
//! core. Out-of-process plugins are executables speaking JSON-RPC 2.0 over stdin/stdout, one
//! message per line (docs/PLUGINS.md); each runs under a supervisor that restarts it with
//! backoff when it crashes, hangs or writes garbage. A plugin never takes the gateway down.

pub mod builtin;
pub mod error;
pub mod process;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::agent::tools::Tool;
use crate::rpc::{DuplicateMethod, EventDecl, MethodDescriptor, MethodTable, TableSnapshot};
use error::PluginError;

/// Namespaces a plugin may not take: the core's, and those version 2 reserves for its own.
pub const RESERVED: &[&str] = &[
    "gateway",
    "events",
    "chat",
    "sessions",
    "config",
    "plugins",
    "models",
    "tools",
    "rpc",
    "plugin",
    "agents",
    "mcp",
    "approvals",
    "runs",
    "usage",
    "logs",
    "cron",
];

/// Where a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    /// Being started.
    Starting,
    /// Serving.
    Running,
    /// Died; restarting after a backoff.
    Restarting,
    /// Cannot run (a name collision, a bad description); not retried until its config changes.
    Failed,
    /// Stopped (disabled or removed).
    Stopped,
}

impl PluginState {
    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// What the plugins need from the application that hosts them.
pub trait PluginHost: Send + Sync + Sized + 'static {
    /// The plugins.
    fn plugins(&self) -> &Plugins<Self>;
    /// The event hub (`plugins.changed`, plugin events).
    fn hub(&self) -> &Arc<crate::events::EventHub>;
    /// The configuration in force.
    fn config(&self) -> Arc<crate::config::Config>;
    /// A fresh copy of the method table without plugins.
    fn base_table(&self) -> Result<MethodTable<Self>, DuplicateMethod>;
    /// The method table in force.
    fn table(&self) -> Arc<TableSnapshot<Self>>;
    /// Swaps in a new method table.
    fn set_table(&self, table: TableSnapshot<Self>);
    /// Hands the agent its tools (built-in and plugins').
    fn set_tools(&self, tools: Vec<Arc<dyn Tool>>);
    /// Resolves when the `plugins` configuration changed.
    fn plugins_change(&self) -> impl std::future::Future<Output = ()> + Send;
    /// Whether shutdown has begun.
    fn is_shutting_down(&self) -> bool;
}

/// What a running plugin contributes.
pub struct Contribution<G> {
    /// Method descriptors (full names, `<plugin>.<method>`).
    pub methods: Vec<MethodDescriptor<G>>,
    /// Agent tools.
    pub tools: Vec<Arc<dyn Tool>>,
    /// Events it may publish (full names).
    pub events: Vec<EventDecl>,
}

impl<G> Default for Contribution<G> {
    fn default() -> Self {
        Self {
            methods: Vec::new(),
            tools: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl<G> Clone for Contribution<G> {
    fn clone(&self) -> Self {
        Self {
            methods: self.methods.clone(),
            tools: self.tools.clone(),
            events: self.events.clone(),
        }
    }
}

/// An in-process plugin of an application whose state is `G`.
pub trait Plugin<G>: Send + Sync {
    /// Its name (also its namespace).
    fn name(&self) -> &str;
    /// Declares its methods (on `table`, exactly as core methods are declared), tools and events.
    fn register(
        &self,
        gw: &Arc<G>,
        table: &mut MethodTable<G>,
        tools: &mut Vec<Arc<dyn Tool>>,
    ) -> Result<(), PluginError>;
}

/// One plugin as `plugins.list` shows it.
pub struct Entry<G> {
    /// `builtin` or `process`.
    pub kind: &'static str,
    /// Its state.
    pub state: PluginState,
    /// What it contributes while running.
    pub contribution: Contribution<G>,
    /// The last error, for people.
    pub error: Option<String>,
}

impl<G> Clone for Entry<G> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind,
            state: self.state,
            contribution: self.contribution.clone(),
            error: self.error.clone(),
        }
    }
}

/// All plugins and their contributions.
pub struct Plugins<G> {
    entries: Mutex<BTreeMap<String, Entry<G>>>,
    processes: Mutex<BTreeMap<String, process::Handle>>,
    builtins: Mutex<BTreeMap<String, Arc<dyn Plugin<G>>>>,
}

impl<G> Default for Plugins<G> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            processes: Mutex::default(),
            builtins: Mutex::default(),
        }
    }
}

impl<G: PluginHost> Plugins<G> {
    /// Every plugin with its state.
    pub fn list(&self) -> Vec<(String, Entry<G>)> {
        self.entries
            .lock()
            .map(|e| e.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The state of `name`.
    pub fn state(&self, name: &str) -> Option<PluginState> {
        self.entries.lock().ok()?.get(name).map(|e| e.state)
    }

    fn set(
        &self,
        gw: &Arc<G>,
        name: &str,
        kind: &'static str,
        state: PluginState,
        contribution: Option<Contribution<G>>,
        error: Option<String>,
    ) {
        let changed = {
            let Ok(mut entries) = self.entries.lock() else {
                return;
            };
            let entry = entries.entry(name.to_string()).or_insert_with(|| Entry {
                kind,
                state,
                contribution: Contribution::default(),
                error: None,
            });
            let changed = entry.state != state || contribution.is_some();
            entry.state = state;
            entry.error = error;
            entry.contribution = match state {
                PluginState::Running => contribution.unwrap_or_else(|| entry.contribution.clone()),
                _ => Contribution::default(),
            };
            changed
        };
        rebuild(gw);
        if changed {
            gw.hub().emit(
                None,
                &crate::protocol::PluginsChangedEvent {
                    plugin: name.to_string(),
                    state: state.as_str().into(),
                },
            );
        }
    }

    fn remove(&self, name: &str) {
        if let Ok(mut e) = self.entries.lock() {
            e.remove(name);
        }
    }
}

/// Rebuilds the method table and the tool list from the core and every running plugin.
pub fn rebuild<G: PluginHost>(gw: &Arc<G>) {
    let mut table = match gw.base_table() {
        Ok(t) => t,
        Err(err) => {
            tracing::error!(%err, "cannot build the core method table");
            return;
        }
    };
    let mut tools = crate::agent::tools::builtin();
    let builtins: Vec<Arc<dyn Plugin<G>>> = gw
        .plugins()
        .builtins
        .lock()
        .map(|b| b.values().cloned().collect())
        .unwrap_or_default();
    for plugin in builtins {
        // Declared exactly like core methods, on the same table.
        if let Err(err) = plugin.register(gw, &mut table, &mut tools) {
            tracing::error!(plugin = plugin.name(), %err, "in-process plugin refused");
        }
    }
    for (name, entry) in gw.plugins().list() {
        if entry.state != PluginState::Running {
            continue;
        }
        for desc in entry.contribution.methods {
            if let Err(err) = table.insert(desc) {
                tracing::error!(plugin = %name, %err, "plugin method refused");
            }
        }
        for event in entry.contribution.events {
            table.event_raw(event);
        }
        tools.extend(entry.contribution.tools);
    }
    match TableSnapshot::build(&table) {
        Ok(snapshot) => gw.set_table(snapshot),
        Err(err) => tracing::error!(%err, "cannot rebuild the method table"),
    }
    gw.set_tools(tools);
}

/// Checks a plugin's contribution against the table without it: every name must be free.
pub fn check_collisions<G: PluginHost>(
    gw: &Arc<G>,
    plugin: &str,
    contribution: &Contribution<G>,
) -> Result<(), String> {
    if RESERVED.contains(&plugin) {
        return Err(format!(
            "`{plugin}` is a reserved namespace of the gateway; give the plugin another name"
        ));
    }
    let table = gw.table();
    let others: Vec<(String, Entry<G>)> = gw
        .plugins()
        .list()
        .into_iter()
        .filter(|(n, _)| n != plugin)
        .collect();
    for desc in &contribution.methods {
        if let Some(existing) = table.get(&desc.name)
            && existing.owner != format!("plugin:{plugin}")
        {
            return Err(format!(
                "method `{}` is already declared by {}",
                desc.name, existing.owner
            ));
        }
        if let Some((other, _)) = others
            .iter()
            .find(|(_, e)| e.contribution.methods.iter().any(|m| m.name == desc.name))
        {
            return Err(format!(
                "method `{}` is already declared by plugin:{other}",
                desc.name
            ));
        }
    }
    let builtin: Vec<String> = crate::agent::tools::builtin()
        .iter()
        .map(|t| t.spec().name)
        .collect();
    for tool in &contribution.tools {
        let name = tool.spec().name;
        if builtin.contains(&name)
            || others
                .iter()
                .any(|(_, e)| e.contribution.tools.iter().any(|t| t.spec().name == name))
        {
            return Err(format!("tool `{name}` already exists"));
        }
    }
    Ok(())
}

/// Brings the running plugins in line with the configuration (called at start and on change).
pub fn reconcile<G: PluginHost>(gw: &Arc<G>) {
    let config = gw.config();
    let desired: BTreeMap<String, crate::config::PluginConfig> = config
        .plugins
        .iter()
        .filter(|p| p.enabled)
        .map(|p| (p.name.clone(), p.clone()))
        .collect();
    let mut processes = match gw.plugins().processes.lock() {
        Ok(p) => p,
        Err(_) => return,
    };
    // Stop what is gone or changed.
    let running: Vec<String> = processes.keys().cloned().collect();
    for name in running {
        let keep = desired
            .get(&name)
            .is_some_and(|want| processes.get(&name).is_some_and(|h| h.config == *want));
        if !keep && let Some(handle) = processes.remove(&name) {
            handle.stop();
        }
    }
    // Plugins removed from the config leave the list once stopped.
    for (name, entry) in gw.plugins().list() {
        if !desired.contains_key(&name)
            && !processes.contains_key(&name)
            && entry.state == PluginState::Stopped
        {
            gw.plugins().remove(&name);
        }
    }
    // In-process plugins: enabled by name, no command.
    let wanted_builtins: Vec<String> = desired
        .iter()
        .filter(|(_, w)| w.command.is_empty())
        .map(|(n, _)| n.clone())
        .collect();
    let current_builtins: Vec<String> = gw
        .plugins()
        .builtins
        .lock()
        .map(|b| b.keys().cloned().collect())
        .unwrap_or_default();
    for name in &current_builtins {
        if !wanted_builtins.contains(name) {
            if let Ok(mut b) = gw.plugins().builtins.lock() {
                b.remove(name);
            }
            gw.plugins()
                .set(gw, name, "builtin", PluginState::Stopped, None, None);
            gw.plugins().remove(name);
        }
    }
    for (name, want) in desired {
        if processes.contains_key(&name) {
            continue;
        }
        if want.command.is_empty() {
            if current_builtins.contains(&name) {
                continue;
            }
            match builtin::find(&name) {
                Some(plugin) => {
                    if let Ok(mut b) = gw.plugins().builtins.lock() {
                        b.insert(name.clone(), plugin);
                    }
                    gw.plugins().set(gw, &name, "builtin", PluginState::Running, None, None);
                }
                None => gw.plugins().set(gw, &name, "process", PluginState::Failed, None, Some(format!("no command, and no in-process plugin is called `{name}`: set `command = [\"/path/to/plugin\", ...]`"))),
            }
            continue;
        }
        processes.insert(name.clone(), process::spawn(gw.clone(), want));
    }
}

/// Stops every plugin (shutdown).
pub fn stop_all<G: PluginHost>(gw: &Arc<G>) {
    if let Ok(mut processes) = gw.plugins().processes.lock() {
        for (_, handle) in std::mem::take(&mut *processes) {
            handle.stop();
        }
    }
}

/// Watches for configuration changes of `plugins` and reconciles.
pub async fn supervise_config<G: PluginHost>(gw: Arc<G>) {
    loop {
        gw.plugins_change().await;
        if gw.is_shutting_down() {
            return;
        }
        reconcile(&gw);
    }
}

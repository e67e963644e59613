//! The typed configuration and its layered loader: defaults < TOML file < environment < flags.

mod error;
pub mod live;
mod load;
pub mod migrate;
mod reload;
mod types;

pub use load::*;
pub use reload::*;
pub use types::*;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sha2::{Digest, Sha256};

    use super::*;

    fn load_with(toml_text: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::new("", e.to_string()))?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml_text).map_err(|e| ConfigError::new("", e.to_string()))?;
        let overrides = Overrides {
            config_path: Some(path),
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        load(
            &overrides,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_without_a_file() {
        let loaded = load_with("", &[]).expect("defaults load");
        assert_eq!(loaded.config.gateway.port, 18789);
        assert_eq!(loaded.config.gateway.bind, "127.0.0.1");
        assert_eq!(loaded.hash, hex::encode(Sha256::digest(b"")));
    }

    #[test]
    fn layers_env_over_file() {
        let loaded = load_with(
            "[gateway]\nport = 1000\n[agent]\nmodel = \"a\"\n",
            &[
                ("CLAWGATE_AGENT__MODEL", "b"),
                ("CLAWGATE_GATEWAY__MAX_BATCH", "7"),
            ],
        )
        .expect("loads");
        assert_eq!(loaded.config.gateway.port, 1000);
        assert_eq!(loaded.config.default_agent().model, "b");
        assert_eq!(loaded.config.gateway.max_batch, 7);
        assert_eq!(
            loaded.overridden_paths,
            vec!["agents.main.model", "gateway.max_batch"]
        );
    }

    #[test]
    fn single_word_variables_are_not_config() {
        let loaded =
            load_with("", &[("CLAWGATE_BIN", "/x"), ("CLAWGATE_SOMETHING", "1")]).expect("ignored");
        assert!(loaded.overridden_paths.is_empty());
    }

    #[test]
    fn unknown_key_names_its_full_path() {
        let err = load_with("[gateway]\nprot = 1\n", &[]).expect_err("refused");
        assert_eq!(err.path, "gateway.prot");
        let err = load_with("", &[("CLAWGATE_AGENT__MODLE", "x")]).expect_err("refused");
        assert_eq!(err.path, "agents.main.modle");
    }

    #[test]
    fn version_one_agent_keys_are_the_default_agents() {
        let loaded = load_with(
            "[gateway]\ndefault_agent = \"coder\"\n[agent]\nmodel = \"a\"\nmax_context_messages = 9\n",
            &[("CLAWGATE_AGENT__MAX_TURNS", "3")],
        )
        .expect("an old file loads");
        let coder = loaded.config.agent("coder").expect("the default agent");
        assert_eq!((coder.model.as_str(), coder.max_turns), ("a", 3));
        assert!(loaded.config.agent("main").is_some(), "main always exists");
        assert_eq!(loaded.overridden_paths, vec!["agents.coder.max_turns"]);
        assert_eq!(
            loaded.migrations,
            vec![
                "agent.model -> agents.coder.model",
                "agent.max_context_messages dropped (compaction replaces it)"
            ]
        );
        // The environment names the default too, and reaches it through the v1 name.
        let loaded = load_with(
            "[agents.b]\nmodel = \"x\"\n",
            &[
                ("CLAWGATE_GATEWAY__DEFAULT_AGENT", "b"),
                ("CLAWGATE_AGENT__MODEL", "y"),
            ],
        )
        .expect("loads");
        assert_eq!(loaded.config.default_agent().model, "y");
    }

    #[test]
    fn agents_are_checked() {
        let err = load_with(
            "[agent]\nmodel = \"a\"\n[agents.main]\nmodel = \"b\"\n",
            &[],
        )
        .expect_err("both forms");
        assert!(
            err.message.contains("[agent]") && err.message.contains("[agents.main]"),
            "{err}"
        );
        let err = load_with("[agents.Bad_Id]\n", &[]).expect_err("bad id");
        assert_eq!(err.path, "agents.Bad_Id");
        let err =
            load_with("[gateway]\ndefault_agent = \"nope\"\n", &[]).expect_err("unknown default");
        assert_eq!(err.path, "gateway.default_agent");
        assert!(err.message.contains("nope"), "{err}");
        let err = load_with("[agents.main.context]\ncompact_threshold = 1.5\n", &[])
            .expect_err("threshold");
        assert_eq!(err.path, "agents.main.context.compact_threshold");
        let err = load_with("[agents.main]\ninstructions_files = [\"../x\"]\n", &[])
            .expect_err("escaping file");
        assert_eq!(err.path, "agents.main.instructions_files[0]");
        let err = load_with("[agents.main]\nmax_context_messages = 3\n", &[])
            .expect_err("v1 key in a v2 table");
        assert_eq!(err.path, "agents.main.max_context_messages");
    }

    #[test]
    fn bad_value_says_found_and_expected() {
        let err = load_with("[gateway]\nport = \"abc\"\n", &[]).expect_err("refused");
        assert_eq!(err.path, "gateway.port");
        assert!(
            err.message.contains("abc") || err.message.contains("string"),
            "{err}"
        );
        let err = load_with("[gateway]\nport = 70000\n", &[]).expect_err("refused");
        assert_eq!(err.path, "gateway.port");
    }

    #[test]
    fn the_file_alone_must_be_valid_and_an_explicit_none_is_seen() {
        let path = Path::new("c.toml");
        let err = parse_file(path, b"[gateway]\nport = 70000\n").expect_err("refused");
        assert_eq!(err.path, "gateway.port");
        let err = parse_file(path, b"gateway = { prot = 1 }\n").expect_err("refused");
        assert_eq!(err.path, "gateway.prot");
        // Not validated: an upper layer may add the token.
        let ok = parse_file(path, b"[gateway]\nbind = \"0.0.0.0\"\n").expect("parses");
        assert!(!says_auth_none(&ok));
        let none = parse_file(path, b"gateway = { auth = { mode = \"none\" } }\n").expect("parses");
        assert!(says_auth_none(&none));
        let none = parse_file(path, b"[gateway.auth]\nmode = \"none\"\n").expect("parses");
        assert!(says_auth_none(&none));
        assert!(
            parse_file(path, b"# only a comment\n\n")
                .expect("parses")
                .is_empty()
        );
    }

    #[test]
    fn mcp_servers_are_checked_and_errors_name_the_key() {
        let ok = load_with(
            "[mcp_servers.files]\ncommand = [\"srv\"]\nenv = { K = \"v\" }\n[mcp_servers.web-2]\nurl = \"http://127.0.0.1:9/mcp\"\nheaders = { X-Key = \"v\" }\ntimeout_ms = 5\n",
            &[],
        )
        .expect("loads");
        let files = &ok.config.mcp_servers["files"];
        assert_eq!(files.command.as_deref(), Some(&["srv".to_string()][..]));
        assert!(files.enabled);
        assert_eq!(files.timeout_ms, MCP_DEFAULT_TIMEOUT_MS);
        assert_eq!(ok.config.mcp_servers["web-2"].timeout_ms, 5);
        let refused = |text: &str| load_with(text, &[]).expect_err("refused");
        for bad in ["Files", "a_b", "-a", "a-", "a--b", &"a".repeat(33)] {
            let err = refused(&format!("[mcp_servers.{bad:?}]\ncommand = [\"x\"]\n"));
            assert_eq!(err.path, format!("mcp_servers.{bad}"), "{err}");
            assert!(err.message.contains("at most 32"), "{err}");
        }
        assert!(is_mcp_server_name(&"a".repeat(32)));
        let err = refused("[mcp_servers.x]\ncommand = [\"x\"]\nurl = \"http://h/\"\n");
        assert_eq!(err.path, "mcp_servers.x");
        assert!(err.message.contains("both"), "{err}");
        let err = refused("[mcp_servers.x]\nenabled = false\n");
        assert_eq!(err.path, "mcp_servers.x");
        assert!(err.message.contains("neither"), "{err}");
        let err = refused("[mcp_servers.x]\ncommand = []\n");
        assert_eq!(err.path, "mcp_servers.x.command");
        let err = refused("[mcp_servers.x]\nurl = \"ftp://h\"\n");
        assert_eq!(err.path, "mcp_servers.x.url");
        let err = refused("[mcp_servers.x]\nurl = \"http://h\"\nheaders = { \"a b\" = \"v\" }\n");
        assert_eq!(err.path, "mcp_servers.x.headers");
        let err = refused("[mcp_servers.x]\nurl = \"http://h\"\nheaders = { A = \"v\\n\" }\n");
        assert_eq!(err.path, "mcp_servers.x.headers.A");
        let err =
            refused("[mcp_servers.x]\nurl = \"http://h\"\nheaders = { Mcp-Session-Id = \"v\" }\n");
        assert_eq!(err.path, "mcp_servers.x.headers.Mcp-Session-Id");
        let err = refused("[mcp_servers.x]\nurl = \"http://h\"\nenv = { A = \"v\" }\n");
        assert_eq!(err.path, "mcp_servers.x.env");
        let err = refused("[mcp_servers.x]\ncommand = [\"x\"]\ntimeout_ms = 0\n");
        assert_eq!(err.path, "mcp_servers.x.timeout_ms");
        let err = refused("[mcp_servers.x]\ncommand = [\"x\"]\ntimeout = 1\n");
        assert_eq!(err.path, "mcp_servers.x.timeout");
    }

    #[test]
    fn non_loopback_without_token_is_refused() {
        let err = load_with("[gateway]\nbind = \"0.0.0.0\"\n", &[]).expect_err("refused");
        assert!(err.message.contains("CLAWGATE_TOKEN"), "{err}");
        let ok = load_with(
            "[gateway]\nbind = \"0.0.0.0\"\n[gateway.auth]\nmode = \"token\"\n[[gateway.auth.tokens]]\nname = \"a\"\ntoken = \"0123456789\"\nscopes = [\"read\"]\n",
            &[],
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn prices_are_finite_non_negative_and_refuse_unknown_keys() {
        let ok = load_with(
            "[prices.\"claude-sonnet-4-5\"]\ninput_per_mtok = 3\noutput_per_mtok = 15.0\ncache_read_per_mtok = 0.3\ncache_write_per_mtok = 3.75\n[prices.free]\ninput_per_mtok = 0\n",
            &[],
        )
        .expect("loads");
        let price = ok.config.prices["claude-sonnet-4-5"];
        assert_eq!(price.input_per_mtok, Some(3.0));
        assert_eq!(price.cache_write_per_mtok, Some(3.75));
        assert_eq!(ok.config.prices["free"].output_per_mtok, None);
        assert_eq!(reload_kind("prices.free.input_per_mtok"), Reload::Hot);
        let refused = |text: &str| load_with(text, &[]).expect_err("refused");
        for bad in ["-1", "nan", "inf", "-inf"] {
            let err = refused(&format!("[prices.m]\noutput_per_mtok = {bad}\n"));
            assert_eq!(err.path, "prices.m.output_per_mtok", "{err}");
            assert!(err.message.contains("at least 0"), "{err}");
        }
        let err = refused("[prices.m]\ninput_per_token = 1\n");
        assert!(err.path.starts_with("prices.m"), "{err}");
        let err = refused("[prices.m]\ninput_per_mtok = \"3\"\n");
        assert!(err.path.starts_with("prices.m"), "{err}");
    }
}

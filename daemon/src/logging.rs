//! Process-wide tracing setup: human format on a terminal, JSON when configured.

use crid_common::config::{LogConfig, LogFormat};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `level` is a tracing filter string.
pub fn init(cfg: &LogConfig) -> Result<(), String> {
    let filter = EnvFilter::try_new(&cfg.level)
        .map_err(|e| format!("config key `log.level`: {:?}: {e}", cfg.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    res.map_err(|e| format!("installing the log subscriber: {e}"))
}

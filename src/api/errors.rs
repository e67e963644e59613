//! The one place where the domain errors of the store, the agent, the configuration and the
//! plugins become protocol errors (codes, `data.kind`, `data.path`): the layers below speak in
//! their own words and never name a wire field.
//!
//! Each domain adds here one `impl From<DomainError> for Error`, so handlers use `?` and a
//! domain module never imports [`crate::error`]'s codes. docs/PROTOCOL.md, "Errors", lists the
//! codes a client sees.

//! The schemars settings every schema of the protocol is generated with.

use schemars::generate::SchemaSettings;

/// The schemars settings every clawgate schema uses: draft-07, components under OpenRPC's path.
pub fn schema_settings() -> SchemaSettings {
    SchemaSettings::draft07().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    })
}

//! What `proto/` declares, read from the descriptor set that `build.rs` compiles from it
//! (`contracts::FILE_DESCRIPTOR_SET`): the services, their RPCs, and the fields each
//! message has (also of the google.rpc error details, from tonic-types). The suite compares the tools' output with this, so it needs no copy
//! of the protos.

use std::collections::{BTreeSet, HashMap};

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};

/// One RPC of a service.
#[derive(Clone, Debug)]
pub(crate) struct Method {
    pub(crate) name: String,
    /// Full names, without the leading dot: `inventory.v1.GetProductRequest`.
    pub(crate) input: String,
    pub(crate) output: String,
    pub(crate) client_streaming: bool,
    pub(crate) server_streaming: bool,
    /// Whether the RPC declares options (`idempotency_level`): grpcurl then opens a
    /// block for them instead of ending the line with `;`.
    pub(crate) has_options: bool,
}

impl Method {
    /// The line `grpcurl describe` prints for this RPC.
    pub(crate) fn describe_line(&self) -> String {
        let stream = |yes: bool| if yes { "stream " } else { "" };
        format!(
            "rpc {} ( {}.{} ) returns ( {}.{} ){}",
            self.name,
            stream(self.client_streaming),
            self.input,
            stream(self.server_streaming),
            self.output,
            if self.has_options { " {" } else { ";" }
        )
    }
}

/// A service declared in `proto/`.
#[derive(Clone, Debug)]
pub(crate) struct Service {
    /// `inventory.v1.InventoryService`.
    pub(crate) name: String,
    pub(crate) methods: Vec<Method>,
}

impl Service {
    pub(crate) fn method(&self, name: &str) -> Option<&Method> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// The descriptor set, indexed.
#[derive(Debug)]
pub(crate) struct Schema {
    /// Services of files under `proto/`, sorted by name.
    pub(crate) services: Vec<Service>,
    messages: HashMap<String, DescriptorProto>,
}

impl Schema {
    pub(crate) fn load() -> Self {
        // The google.rpc error details come from tonic-types, as in `shared::server`.
        let sets = [
            contracts::FILE_DESCRIPTOR_SET,
            tonic_types::pb::FILE_DESCRIPTOR_SET,
        ]
        .map(|bytes| FileDescriptorSet::decode(bytes).expect("valid descriptor sets"));
        let mut services = Vec::new();
        let mut messages = HashMap::new();
        for file in sets.iter().flat_map(|set| &set.file) {
            let package = file.package();
            for message in &file.message_type {
                index_message(
                    &format!("{package}.{}", message.name()),
                    message,
                    &mut messages,
                );
            }
            // Imports (well-known types) are in the set too; only files of proto/
            // declare this project's services.
            if !super::tools::root()
                .join("proto")
                .join(file.name())
                .is_file()
            {
                continue;
            }
            for service in &file.service {
                services.push(Service {
                    name: format!("{package}.{}", service.name()),
                    methods: service
                        .method
                        .iter()
                        .map(|m| Method {
                            name: m.name().to_owned(),
                            input: m.input_type().trim_start_matches('.').to_owned(),
                            output: m.output_type().trim_start_matches('.').to_owned(),
                            client_streaming: m.client_streaming(),
                            server_streaming: m.server_streaming(),
                            has_options: m.options.is_some(),
                        })
                        .collect(),
                });
            }
        }
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Self { services, messages }
    }

    pub(crate) fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The lines `grpcurl describe <message>` prints for each field, e.g.
    /// `repeated .inventory.v1.ReservationItem items = 2;` (a line that ends with ` [`
    /// is the start of a field with options); `None` if the message is not in the set.
    pub(crate) fn field_lines(&self, message: &str) -> Option<Vec<String>> {
        let descriptor = self.messages.get(message)?;
        Some(
            descriptor
                .field
                .iter()
                .map(|field| {
                    let map_entry = self.map_entry(field);
                    let label = if field.label() == Label::Repeated && map_entry.is_none() {
                        "repeated "
                    } else {
                        ""
                    };
                    let type_name = match map_entry {
                        Some(entry) => format!(
                            "map<{}, {}>",
                            type_name(&entry.field[0]),
                            type_name(&entry.field[1])
                        ),
                        None => type_name(field),
                    };
                    // A field with options (e.g. `google.api.field_visibility`) is
                    // printed with them: `… = 6 [(.google.api.…) = { … }];`, matched
                    // up to its `[`.
                    let end = if field.options.is_some() { " [" } else { ";" };
                    format!(
                        "{label}{type_name} {} = {}{end}",
                        field.name(),
                        field.number()
                    )
                })
                .collect(),
        )
    }

    /// The synthetic entry message of a `map<K, V>` field.
    fn map_entry(&self, field: &FieldDescriptorProto) -> Option<&DescriptorProto> {
        let message = self
            .messages
            .get(field.type_name().trim_start_matches('.'))?;
        let is_map = message.options.as_ref().is_some_and(|o| o.map_entry());
        (field.r#type() == Type::Message && is_map).then_some(message)
    }

    /// `messages` and every message they refer to through their fields, sorted.
    pub(crate) fn closure<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<String> = messages.into_iter().map(str::to_owned).collect();
        while let Some(name) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(descriptor) = self.messages.get(&name) {
                for field in &descriptor.field {
                    // A map's entry type is no message of its own (grpcurl describes it
                    // as "the entry type for a map field"): follow its value instead.
                    let field = self.map_entry(field).map_or(field, |entry| &entry.field[1]);
                    if field.r#type() == Type::Message {
                        pending.push(field.type_name().trim_start_matches('.').to_owned());
                    }
                }
            }
        }
        seen
    }
}

/// A field's type as protobuf source writes it: `string`, `.common.v1.Money`.
fn type_name(field: &FieldDescriptorProto) -> String {
    match field.r#type() {
        Type::Message | Type::Enum | Type::Group => field.type_name().to_owned(),
        scalar => scalar
            .as_str_name()
            .trim_start_matches("TYPE_")
            .to_ascii_lowercase(),
    }
}

fn index_message(
    name: &str,
    message: &DescriptorProto,
    out: &mut HashMap<String, DescriptorProto>,
) {
    for nested in &message.nested_type {
        index_message(&format!("{name}.{}", nested.name()), nested, out);
    }
    out.insert(name.to_owned(), message.clone());
}

//! The fields the protos keep off HTTP (`google.api.field_visibility`), found once
//! per route at start-up: the JSON writer (`json.rs`) leaves them out as it writes,
//! so that an answer costs no pass over it, and nothing when its messages have none.

use std::collections::{HashMap, HashSet};

use prost_reflect::{
    DynamicMessage, FieldDescriptor, MessageDescriptor, ReflectMessage as _, Value,
};

use crate::routes::is_internal;

/// The hidden fields of the messages of one route's answers.
#[derive(Debug, Default)]
pub(crate) struct Hidden {
    /// By full name, each message that has a hidden field, in it or in a message
    /// within: the numbers of its own hidden fields (often none, or one or two).
    messages: HashMap<String, Vec<u32>>,
}

impl Hidden {
    /// The hidden fields of messages of `output` and every message within.
    pub(crate) fn of(output: &MessageDescriptor) -> Self {
        let mut hidden = Self::default();
        hidden.walk(output, &mut HashSet::new());
        hidden
    }

    fn walk(&mut self, message: &MessageDescriptor, seen: &mut HashSet<String>) -> bool {
        if !seen.insert(message.full_name().to_owned()) {
            return self.messages.contains_key(message.full_name());
        }
        let mut numbers = Vec::new();
        let mut within = false;
        for field in message.fields() {
            if is_internal(&field) {
                numbers.push(field.number());
            } else if let Some(inner) = field.kind().as_message() {
                within |= self.walk(inner, seen);
            }
        }
        let any = within || !numbers.is_empty();
        if any {
            self.messages
                .insert(message.full_name().to_owned(), numbers);
        }
        any
    }

    /// Whether no message of the answers has a hidden field.
    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// `None` when no field of a `message` hides, nor of a message within; else the
    /// numbers of its own hidden fields.
    pub(crate) fn in_message(&self, message: &MessageDescriptor) -> Option<&[u32]> {
        self.messages.get(message.full_name()).map(Vec::as_slice)
    }

    /// Whether the protos keep `field` off HTTP.
    pub(crate) fn hides(&self, field: &FieldDescriptor) -> bool {
        self.in_message(field.parent_message())
            .is_some_and(|numbers| numbers.contains(&field.number()))
    }

    /// Clears the hidden fields of `message` and of the messages in it.
    pub(crate) fn strip(&self, message: &mut DynamicMessage) {
        let Some(numbers) = self.in_message(&message.descriptor()) else {
            return;
        };
        for field in message.descriptor().fields() {
            if numbers.contains(&field.number()) {
                message.clear_field(&field);
                continue;
            }
            if !message.has_field(&field) {
                continue;
            }
            match message.get_field_mut(&field) {
                Value::Message(inner) => self.strip(inner),
                Value::List(items) => {
                    for item in items {
                        if let Value::Message(inner) = item {
                            self.strip(inner);
                        }
                    }
                }
                Value::Map(entries) => {
                    for value in entries.values_mut() {
                        if let Value::Message(inner) = value {
                            self.strip(inner);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

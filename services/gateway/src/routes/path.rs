//! Path templates (`/v1/orders/{order_id}`) and the field paths their variables and
//! bindings name (`order.order_id`), parsed against the request message.

use std::fmt;

use prost_reflect::{FieldDescriptor, MessageDescriptor};

/// A path of fields from a message into its nested messages, e.g. `order.order_id`:
/// every field but the last is a singular message field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath(Vec<FieldDescriptor>);

/// A path template: `/v1/orders/{order_id}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    /// The template as written in the proto, e.g. `/v1/orders/{order_id}`: the route
    /// in spans and metrics (`http.route`).
    pub template: String,
    /// Its segments, between slashes.
    pub segments: Vec<Segment>,
}

/// One segment of a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A literal, e.g. `orders`.
    Literal(String),
    /// A variable filling the field (a singular scalar), e.g. `{order_id}`.
    Variable(FieldPath),
}

impl FieldPath {
    /// `path` (`a.b.c`, proto field names) in `message`: every name but the last must
    /// be a singular message field.
    pub fn parse(path: &str, message: &MessageDescriptor) -> Result<Self, String> {
        let mut fields = Vec::new();
        let mut current = Some(message.clone());
        for name in path.split('.') {
            let Some(message) = current.take() else {
                return Err(format!("{path}: a field of a non-message field"));
            };
            let field = message
                .get_field_by_name(name)
                .ok_or_else(|| format!("{path}: {} has no field {name:?}", message.full_name()))?;
            if !field.is_list() && !field.is_map() {
                current = field.kind().as_message().cloned();
            }
            fields.push(field);
        }
        Ok(Self(fields))
    }

    /// The fields, from the outer message inwards; never empty.
    pub fn fields(&self) -> &[FieldDescriptor] {
        &self.0
    }

    /// The first field, in the outer message.
    pub fn first(&self) -> &FieldDescriptor {
        &self.0[0]
    }

    /// The field the path ends at.
    pub fn last(&self) -> &FieldDescriptor {
        &self.0[self.0.len() - 1]
    }

    /// The path in JSON names (`order.orderId`), as the proto3 JSON mapping names it.
    pub fn json_name(&self) -> String {
        self.join(FieldDescriptor::json_name)
    }

    fn join(&self, name: impl Fn(&FieldDescriptor) -> &str) -> String {
        let names: Vec<&str> = self.0.iter().map(name).collect();
        names.join(".")
    }
}

impl fmt::Display for FieldPath {
    /// The path in proto names: `order.order_id`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.join(FieldDescriptor::name))
    }
}

/// `path` split at the slashes that are not inside a variable (`{name=a/*}`).
fn split_segments(path: &str) -> Vec<&str> {
    let mut segments = Vec::new();
    let (mut start, mut depth) = (0, 0u32);
    for (i, c) in path.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => {
                segments.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    segments.push(&path[start..]);
    segments
}

impl PathTemplate {
    /// Template `template` over the fields of `message`.
    pub fn parse(template: &str, message: &MessageDescriptor) -> Result<Self, String> {
        let Some(rest) = template.strip_prefix('/') else {
            return Err(format!("path {template:?} does not start with /"));
        };
        let mut segments = Vec::new();
        for segment in split_segments(rest) {
            if let Some(variable) = segment.strip_prefix('{') {
                let variable = variable.strip_suffix('}').ok_or_else(|| {
                    format!("path {template:?}: a variable is a whole segment, {{field}}")
                })?;
                let (field, pattern) = variable.split_once('=').unwrap_or((variable, "*"));
                if pattern != "*" {
                    return Err(format!(
                        "path {template:?}: {{{variable}}}: only one-segment variables ({{field}} or {{field=*}}) are supported"
                    ));
                }
                let field = FieldPath::parse(field, message)
                    .map_err(|e| format!("path {template:?}: {e}"))?;
                segments.push(Segment::Variable(field));
            } else if segment.is_empty()
                || segment
                    .chars()
                    .any(|c| matches!(c, '{' | '}' | ':' | '*' | '?' | '#') || c.is_whitespace())
            {
                return Err(format!(
                    "path {template:?}: segment {segment:?} is neither a literal nor a variable \
                     (custom verbs and wildcards are not supported)"
                ));
            } else {
                segments.push(Segment::Literal(segment.to_owned()));
            }
        }
        Ok(Self {
            template: template.to_owned(),
            segments,
        })
    }

    /// The fields of its variables, in order.
    pub fn variables(&self) -> impl Iterator<Item = &FieldPath> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Variable(field) => Some(field),
            Segment::Literal(_) => None,
        })
    }

    /// The template with its variables named by position (`/v1/orders/{0}`): what
    /// two templates that match the same paths have in common.
    pub(crate) fn shape(&self) -> String {
        let mut shape = String::new();
        let mut n = 0;
        for segment in &self.segments {
            shape.push('/');
            match segment {
                Segment::Literal(literal) => shape.push_str(literal),
                Segment::Variable(_) => {
                    shape.push_str(&format!("{{{n}}}"));
                    n += 1;
                }
            }
        }
        shape
    }
}

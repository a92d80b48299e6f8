
// remove-service: {{name}} {
fn {{name}}() -> ServiceSpec {
    const S: &str = "{{name}}.v1.{{Name}}Service";
    ServiceSpec {
        name: "{{name}}",
        local_port: {{port}},
        service: S,
        runs_first: false,
        uncalled: &[],
        scenarios: independent(vec![
            call(S, "GetItem", json!({"item_id": "item-1"})).returns(json!({"item": {
                "itemId": "item-1",
                "displayName": "An example item",
                "createTime": "<timestamp>",
            }})),
            call(S, "GetItem", json!({"item_id": "item-404"}))
                .fails(
                    Code::NotFound,
                    "item \"item-404\" not found",
                    vec![not_found("item", "item-404")],
                )
                .verbose(),
            call(S, "GetItem", json!({"item_id": ""})).fails(
                Code::InvalidArgument,
                "invalid request: item_id: is required",
                vec![bad_request(&[("item_id", "is required")])],
            ),
        ])
        .collect(),
    }
}
// remove-service: {{name}} }

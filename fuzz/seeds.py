#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/: one valid
request per method (and a few answers for the gateway's JSON mapping), in the input
format of fuzz/src/lib.rs: a method byte (the method's position in its service), a
mode byte (0: one gRPC message), then the protobuf message.

Run after changing the protos, with the pinned tools (buf, Python protobuf):
    .tools/venv/bin/python fuzz/seeds.py
"""

import json
import pathlib
import subprocess

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"

# Requests by service and method name, as proto3 JSON.
REQUESTS = {
    ("grpc_inventory", "inventory.v1.InventoryService"): {
        "GetProduct": {"sku": "SKU-001"},
        "ListProducts": {"pageSize": 2},
        "ReserveStock": {"reservationId": "r-1", "items": [{"sku": "SKU-001", "quantity": 2}]},
        "CommitReservation": {"reservationId": "r-1"},
        "ReleaseReservation": {"reservationId": "r-1"},
        "RestockProducts": {"sku": "SKU-002", "quantity": 5},
    },
    ("grpc_payments", "payments.v1.PaymentService"): {
        "Charge": {
            "requestId": "q-1",
            "orderId": "o-1",
            "customerId": "c-1",
            "amount": {"currencyCode": "USD", "amountMinor": "2400"},
            "cardToken": "tok_visa",
        },
        "Refund": {"paymentId": "p-1", "reason": "returned"},
        "GetPayment": {"paymentId": "p-1"},
        "ListPayments": {},
    },
    ("grpc_orders", "orders.v1.OrderService"): {
        "PlaceOrder": {
            "requestId": "q-1",
            "customerId": "c-1",
            "items": [{"sku": "SKU-001", "quantity": 1}],
            "cardToken": "tok_visa",
        },
        "GetOrder": {"orderId": "o-1"},
        "ListOrders": {"customerId": "c-1", "pageSize": 10},
        "WatchOrder": {"orderId": "o-1"},
    },
    ("grpc_notifications", "notifications.v1.NotificationService"): {
        "ListNotifications": {"customerId": "c-1"},
        "StreamNotifications": {"customerId": "c-1"},
    },
}

# The gateway's target reads the bytes as a JSON body and as protobuf answers.
GATEWAY_JSON = [
    b'{"customerId": "c-1", "items": [{"sku": "SKU-001", "quantity": 2}], "cardToken": "tok_visa"}',
    b'{"customerId": 7, "items": [{"sku": "SKU-001", "quantity": "two"}]}',
    b'{"customerId": "c-1", "colour": "red"}',
]
GATEWAY_PROTOS = {
    "orders.v1.Order": {
        "orderId": "o-1",
        "customerId": "c-1",
        "items": [{"sku": "SKU-001", "quantity": 2, "unitPrice": {"currencyCode": "USD", "amountMinor": "2400"}}],
        "status": "ORDER_STATUS_CONFIRMED",
        "createTime": "2025-01-31T09:30:00.123456789Z",
    },
    "inventory.v1.ListProductsResponse": {
        "products": [{"sku": "SKU-001", "name": "Beans", "price": {"currencyCode": "USD", "amountMinor": "2400"}}],
        "nextPageToken": "abc",
    },
}


def pool():
    image = subprocess.run(
        ["buf", "build", "--as-file-descriptor-set", "-o", "-"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout
    files = descriptor_pb2.FileDescriptorSet.FromString(image)
    result = descriptor_pool.DescriptorPool()
    for file in files.file:
        result.Add(file)
    return result


def encode(pool, type_name, value):
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(type_name))
    return json_format.ParseDict(value, cls()).SerializeToString()


def write(target, name, data):
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def main():
    descriptors = pool()
    for (target, service_name), requests in REQUESTS.items():
        if not (ROOT / "fuzz" / "fuzz_targets" / f"{target}.rs").exists():
            continue  # a service `make remove-service` removed
        service = descriptors.FindServiceByName(service_name)
        for index, method in enumerate(service.methods):
            request = requests[method.name]  # every method has a seed
            message = encode(descriptors, method.input_type.full_name, request)
            write(target, method.name, bytes([index, 0]) + message)
    for i, body in enumerate(GATEWAY_JSON):
        write("gateway_json", f"body-{i}.json", body)
    for type_name, value in GATEWAY_PROTOS.items():
        write("gateway_json", type_name, encode(descriptors, type_name, value))


if __name__ == "__main__":
    main()

"""The Python peer of `make bench`: inventory.v1.InventoryService/GetProduct on
grpc.aio, answering the same product as inventory and the Rust baseline.

The messages are built from the descriptor set the `bench` driver writes
(contracts::FILE_DESCRIPTOR_SET), so no generated stubs (and no grpcio-tools) are
needed. Runs until killed.
"""

import argparse
import asyncio
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SKU = "SKU-005"


def message_classes(descriptor_set_path):
    with open(descriptor_set_path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    # The default pool already holds the well-known types (Timestamp and its helpers).
    pool = descriptor_pool.Default()
    for file in files.file:
        try:
            pool.FindFileByName(file.name)
        except KeyError:
            pool.Add(file)
    get = lambda name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    return get("inventory.v1.GetProductRequest"), get("inventory.v1.GetProductResponse")


async def serve(port, descriptor_set_path):
    request_class, response_class = message_classes(descriptor_set_path)

    async def get_product(request, context):
        if request.sku != SKU:
            await context.abort(grpc.StatusCode.NOT_FOUND, "the peer knows one product")
        response = response_class()
        product = response.product
        product.sku = SKU
        product.name = "Paper filters"
        product.description = "Pack of 100."
        product.price.currency_code = "USD"
        product.price.amount_minor = 699
        product.available = 500
        product.update_time.FromNanoseconds(time.time_ns())
        return response

    handler = grpc.method_handlers_generic_handler(
        "inventory.v1.InventoryService",
        {
            "GetProduct": grpc.unary_unary_rpc_method_handler(
                get_product,
                request_deserializer=request_class.FromString,
                response_serializer=response_class.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--descriptor-set", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.descriptor_set))


if __name__ == "__main__":
    main()

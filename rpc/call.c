/*
 * call.c - what the server and the client both do with a grpc call: pack and
 * unpack protobuf-c messages in grpc byte buffers, run one batch and wait for
 * it, shut a queue down (see rpc_internal.h).
 */
#include "rpc_internal.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>
#include <errno.h>
#include <stdlib.h>

static const char *const rpc_status_code_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *rpc_status_code_name(grpc_status_code code)
{
    if ((unsigned)code < sizeof(rpc_status_code_names) / sizeof(rpc_status_code_names[0]))
        return rpc_status_code_names[code];
    return "UNKNOWN";
}

grpc_byte_buffer *rpc_message_pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    grpc_slice slice;
    grpc_byte_buffer *bb;

    if (buf == NULL)
        return NULL;
    protobuf_c_message_pack(msg, buf);
    slice = grpc_slice_new(buf, len, free);
    bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

ProtobufCMessage *rpc_message_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc)
{
    grpc_byte_buffer_reader reader;
    ProtobufCMessage *msg;
    grpc_slice slice;

    if (bb == NULL || !grpc_byte_buffer_reader_init(&reader, bb))
        return NULL;
    slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(slice),
                                    GRPC_SLICE_START_PTR(slice));
    grpc_slice_unref(slice);
    return msg;
}

int rpc_batch_run(grpc_call *call, grpc_completion_queue *cq, const grpc_op *ops, size_t n,
                  void *tag)
{
    grpc_event ev;

    if (grpc_call_start_batch(call, ops, n, tag, NULL) != GRPC_CALL_OK)
        return -EIO;
    ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE || !ev.success)
        return -ECANCELED;
    return 0;
}

void rpc_queue_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

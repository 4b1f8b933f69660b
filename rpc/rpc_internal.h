/*
 * rpc_internal.h - what the server (server.c) and the client (client.c)
 * both do with a grpc call (call.c). Not a public header: rpc.h is.
 */
#ifndef CASBOX_RPC_INTERNAL_H
#define CASBOX_RPC_INTERNAL_H

#include "rpc.h"

/* msg packed into a new byte buffer (grpc owns the bytes), or NULL. */
grpc_byte_buffer *rpc_message_pack(const ProtobufCMessage *msg);
/* Starts a batch on call and plucks its completion from cq (tag must be
 * unique among the batches of cq in flight). 0, -EIO when the batch could
 * not start (nothing to pluck), -ECANCELED when it completed unsuccessfully
 * (the call ended: the peer went away, the deadline passed, a shutdown). */
int rpc_batch_run(grpc_call *call, grpc_completion_queue *cq, const grpc_op *ops, size_t n,
                  void *tag);
/* Shuts a pluck queue down, drains it and destroys it. */
void rpc_queue_destroy(grpc_completion_queue *cq);

#endif

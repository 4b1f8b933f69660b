/*
 * write_request.h - google.bytestream.WriteRequest decoded straight from the
 * grpc byte buffer it arrived in, its data left in grpc's slices
 * (write_request.c).
 */
#ifndef CASBOX_WRITE_REQUEST_H
#define CASBOX_WRITE_REQUEST_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One piece of the data field, pointing into a slice of the buffer. */
struct write_request_span {
    const uint8_t *data;
    size_t len;
};

struct write_request {
    char *resource_name; /* NUL-terminated copy; "" when absent */
    int64_t write_offset;
    bool finish_write;
    size_t data_len;                  /* total of the spans */
    struct write_request_span *spans; /* the data field, in order */
    size_t n_spans;
    /* private: what the spans point into */
    grpc_byte_buffer_reader reader;
    bool reader_live;
    grpc_slice *slices;
    size_t n_slices, cap_slices;
};

/* Decodes bb (which must outlive r) into r, as protobuf would: the last
 * occurrence of a field wins, unknown fields are skipped. Returns 0, -EINVAL
 * when it is not a valid WriteRequest, -ENOMEM. Always call
 * write_request_free afterwards. */
int write_request_decode(grpc_byte_buffer *bb, struct write_request *r);
void write_request_free(struct write_request *r);

#endif

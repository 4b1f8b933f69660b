# Stand-in for buildozer's module extension (used by `bazel mod tidy` only):
# an empty @buildozer_binary repository.
def _empty_repo_impl(rctx):
    rctx.file("BUILD.bazel", "")

_empty_repo = repository_rule(implementation = _empty_repo_impl)

def _buildozer_binary_impl(_mctx):
    _empty_repo(name = "buildozer_binary")

buildozer_binary = module_extension(
    implementation = _buildozer_binary_impl,
    tag_classes = {"buildozer": tag_class(attrs = {
        "sha256": attr.string_dict(),
        "version": attr.string(),
    })},
)

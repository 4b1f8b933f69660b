"""unresolved_symlink: an action's output that is a symlink, declared with
ctx.actions.declare_symlink so that its target may dangle (Bazel 7's
--allow_unresolved_symlinks, on by default)."""

def _unresolved_symlink_impl(ctx):
    out = ctx.actions.declare_symlink(ctx.label.name)
    ctx.actions.run_shell(
        outputs = [out],
        command = "ln -s \"$1\" \"$2\"",
        arguments = [ctx.attr.target, out.path],
        mnemonic = "UnresolvedSymlink",
        progress_message = "Making symlink %{output}",
    )
    return [DefaultInfo(files = depset([out]))]

unresolved_symlink = rule(
    implementation = _unresolved_symlink_impl,
    attrs = {"target": attr.string(mandatory = True)},
)

"""Renders the anchor proxy templates (bench/anchors/, copied from shared/bench-anchors/conf)
into bench/work/conf/ with @BENCH_DIR@ replaced by bench/work."""

from paths import ANCHOR_TEMPLATES, CONF, WORK

TEMPLATE_SUFFIXES = (".conf", ".cfg", ".yaml")


def render_all() -> None:
    CONF.mkdir(parents=True, exist_ok=True)
    for template in sorted(ANCHOR_TEMPLATES.iterdir()):
        if template.suffix in TEMPLATE_SUFFIXES:
            text = template.read_text().replace("@BENCH_DIR@", str(WORK))
            (CONF / template.name).write_text(text)

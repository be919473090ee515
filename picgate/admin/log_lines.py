"""The console's log in the reader's language: every log line is written in Chinese (the stored
text, what ``docker logs`` and CloudWatch show) and shown in English when the console is.

``PHRASES`` pairs each Chinese template written by PicGate's code with its English twin; ``{}``
stands for a value (a count, an id, a message), carried over unchanged. Translating at display
time keeps one stored text per line, covers lines written before a language switch, and leaves
the code that writes log lines alone. ``tests/unit/test_log_lines.py`` finds every Chinese
template in the code and fails on one without a twin here.
"""

from __future__ import annotations

import functools
import re

PHRASES: tuple[tuple[str, str], ...] = (
    # gateway: requests and answers
    ("📤 发起对话请求: {} 条消息", "📤 Chat request sent: {} messages"),
    ("📥 上游对话返回成功", "📥 Upstream chat answer received"),
    ("✅ 对话图片已保存: {}...", "✅ Chat image saved: {}..."),
    ("🖼️ 历史图片已内联: {} 张", "🖼️ History images inlined: {}"),
    (
        "🗜️ 历史图片超过 MAX_INLINE_IMAGES_MB: {} 张原图, {} 张缩小, {} 张省略",
        "🗜️ History images over MAX_INLINE_IMAGES_MB: {} at full size, {} downscaled, {} left out",
    ),
    ("🧰 已去掉发给图片模型的 {}", "🧰 Removed from a request to an image model: {}"),
    (
        "🧩 Open WebUI 后台任务 ({}): 本地回答，未调用图片模型",
        "🧩 Open WebUI background task ({}): answered by PicGate, the image model not called",
    ),
    (
        "🧩 Open WebUI 后台任务 ({}): 转给任务模型 {}",
        "🧩 Open WebUI background task ({}): sent to the task model {}",
    ),
    (
        "⚠️ 上游未按流式返回，已转换为流式输出",
        "⚠️ Upstream did not stream; its answer was streamed on",
    ),
    (
        "⚠️ 对话中的图片数据无效，保留原文: {}",
        "⚠️ Invalid image data in a chat answer, kept as is: {}",
    ),
    ("❌ 对话图片保存失败，已保留原始数据: {}", "❌ Chat image not saved, original data kept: {}"),
    ("📤 发起文生图请求: prompt={}", "📤 Image generation request sent: prompt={}"),
    ("📥 上游返回成功: 收到 {} 张图片", "📥 Upstream answered: {} images received"),
    ("✅ 文生图完成: {}", "✅ Image generation done: {}"),
    (
        "📤 发起图片编辑请求: prompt={}, {} 张输入图片",
        "📤 Image edit request sent: prompt={}, {} input images",
    ),
    ("✅ 图片编辑完成: {}", "✅ Image edit done: {}"),
    ("❌ 图片保存失败，已内联返回: {}", "❌ Image not saved, returned inline: {}"),
    (
        "⚠️ 对话应答中的图片超过 MAX_IMAGES_PER_ANSWER={}，其余图片未保存，已从应答中略去",
        "⚠️ A chat answer held more than MAX_IMAGES_PER_ANSWER={} images: the rest were not "
        "saved and were left out of the answer",
    ),
    (
        "⚠️ 请求引用的图片过多，只查找前 {} 个，{} 个图片链接未查找、按原文发送",
        "⚠️ A request named too many images: only the first {} were looked up, {} image links "
        "were sent as written",
    ),
    (
        "⚠️ 上游返回 {} 张图片，超过请求的 n={}，其余已丢弃",
        "⚠️ The upstream sent {} images, more than the requested n={}: the rest were dropped",
    ),
    (
        "⚠️ PUBLIC_BASE_URL 未设置，图片链接使用请求地址生成 (PUBLIC_BASE_URL is not set)",
        "⚠️ PUBLIC_BASE_URL is not set: image links are built from the request's address",
    ),
    ("❌ 对话流中断: {}", "❌ Chat stream broken off: {}"),
    ("❌ 上游返回错误: HTTP {}: {}", "❌ Upstream error: HTTP {}: {}"),
    ("❌ 请求失败: HTTP {}: {}", "❌ Request failed: HTTP {}: {}"),
    ("⚠️ 请求被拒绝: HTTP {}: {}", "⚠️ Request refused: HTTP {}: {}"),
    (
        "⚠️ 网关密钥错误 ×{} 来自 {} (wrong gateway API key)",
        "⚠️ Wrong gateway API key ×{} from {}",
    ),
    (
        "🚫 网关密钥错误过多，已限流 ×{} 来自 {} (wrong gateway keys: throttled)",
        "🚫 Too many wrong gateway API keys, throttled ×{} from {}",
    ),
    ("其他地址 (other addresses)", "other addresses"),
    ("❌ 内部错误: {}", "❌ Internal error: {}"),
    # images and R2
    ("📥 已从 R2 取回并缓存: {}...", "📥 Fetched from R2 and cached: {}..."),
    ("❌ R2 对象内容校验失败: {}...", "❌ R2 object failed its checksum: {}..."),
    ("⚠️ R2 不可用，无法取回图片: {}...", "⚠️ R2 unavailable, image not fetched: {}..."),
    ("☁️ 已上传到 R2: {}...", "☁️ Uploaded to R2: {}..."),
    ("❌ R2 上传失败: {}... (第 {} 次) {}", "❌ R2 upload failed: {}... (attempt {}) {}"),
    ("⚠️ R2 上传失败，稍后重试: {} 张 ({})", "⚠️ R2 uploads failed, retried later: {} ({})"),
    (
        "❌ R2 上传失败: {}... {}（已排队稍后重试）",
        "❌ R2 upload failed: {}... {} (queued to retry later)",
    ),
    ("☁️ 未归档的本地图片已排队上传到 R2: {} 张", "☁️ Local images without an R2 copy queued: {}"),
    ("🔁 重新排队上传失败的图片: {} 张", "🔁 Failed uploads queued again: {}"),
    (
        "🗑️ 已删除图片: 本地 {} 张, R2 {} 个, 记录 {} 条",
        "🗑️ Images deleted: {} local, {} in R2, {} rows",
    ),
    ("❌ R2 删除失败: {} 个 ({})", "❌ R2 deletes failed: {} ({})"),
    # jobs
    ("🧹 定时清理完成: {}", "🧹 Scheduled cleanup done: {}"),
    ("上传 {} 张", "{} uploaded"),
    ("（失败 {}）", " ({} failed)"),
    ("过期删除 {} 张", "{} expired"),
    ("超限删除 {} 张", "{} removed for the size cap"),
    ("释放 {}", "{} freed"),
    ("删除记录 {} 条", "{} rows deleted"),
    ("R2 对象 {} 个", "{} R2 objects"),
    ("{} 张待上传暂不删除", "{} kept until uploaded"),
    ("修复 {} 处", "{} repaired"),
    ("错误 {} 个", "{} errors"),
    (
        "🔧 一致性修复: 删除 {} 个孤立文件，{} 条记录的本地文件已丢失，恢复 {} 条本地标记，"
        "删除 {} 个临时文件",
        "🔧 Consistency repair: {} orphan files removed, {} rows had lost their local file, "
        "{} local marks restored, {} temporary files removed",
    ),
    (
        "🗂️ 元数据清理: 删除 {} 条超过 {} 天的记录",
        "🗂️ Metadata cleanup: {} rows older than {} days deleted",
    ),
    ("，同时删除 {} 个 R2 对象", ", and {} R2 objects"),
    (
        "🗑️ 清除本地缓存: 删除 {} 张已在 R2 的图片，释放 {}，保留 {} 张仅存本地的图片",
        "🗑️ Local cache cleared: {} images already in R2 removed, {} freed, {} local-only "
        "images kept",
    ),
    (
        "🧹 过期清理: 删除 {} 张超过 {} 小时未访问的本地图片，释放 {}",
        "🧹 TTL cleanup: {} local images not opened for {} hours removed, {} freed",
    ),
    (
        "（其中 {} 张没有 R2 副本，已永久过期）",
        " ({} of them had no R2 copy and are gone for good)",
    ),
    (
        "⚠️ {} 张过期图片尚未上传到 R2，暂不删除本地文件",
        "⚠️ {} expired images are not in R2 yet: their local files are kept",
    ),
    (
        "🧹 自动清理: 删除 {} 张最早的图片，保持在 {}MB 限制内",
        "🧹 Size cap: {} oldest images removed to stay under {} MB",
    ),
    (
        "⚠️ 本地缓存超过 {}MB 上限，但剩余图片尚未上传到 R2，暂不删除",
        "⚠️ The local cache is over its {} MB cap, but the rest is not in R2 yet: kept",
    ),
    # admin
    (
        "🚫 首次设置被拒绝：设置令牌错误 (IP {})",
        "🚫 First-run setup refused: wrong setup token (IP {})",
    ),
    ("👤 已创建管理员账户: {}", "👤 Admin account created: {}"),
    (
        "🚫 管理员登录过于频繁，已暂时锁定 (IP {})",
        "🚫 Too many admin logins: locked for a while (IP {})",
    ),
    ("⚠️ 管理员登录失败 (IP {})", "⚠️ Admin login failed (IP {})"),
    # the same three, and two more, tallied per address and minute
    (
        "🚫 首次设置被拒绝：设置令牌错误 ×{} 来自 {} (wrong setup token)",
        "🚫 First-run setup refused: wrong setup token ×{} from {}",
    ),
    (
        "🚫 管理员登录过于频繁，已暂时锁定 ×{} 来自 {} (admin sign-in locked)",
        "🚫 Too many admin logins: locked for a while ×{} from {}",
    ),
    (
        "⚠️ 管理员登录失败 ×{} 来自 {} (admin sign-in failed)",
        "⚠️ Admin login failed ×{} from {}",
    ),
    (
        "🚫 登录校验繁忙，已拒绝 ×{} 来自 {} (sign-in checks busy)",
        "🚫 Sign-in checks busy: refused ×{} from {}",
    ),
    ("🔐 管理员已登录: {}", "🔐 Admin signed in: {}"),
    ("🔑 管理员已修改密码: {}", "🔑 Admin changed the password: {}"),
    ("⚙️ 设置已保存: {}", "⚙️ Settings saved: {}"),
    ("🔑 已生成新的网关 API 密钥", "🔑 A new gateway API key was generated"),
    ("🔑 已创建网关密钥: {}", "🔑 Gateway key created: {}"),
    ("🔑 已吊销网关密钥: {}", "🔑 Gateway key revoked: {}"),
    ("🔌 已保存上游: {}", "🔌 Upstream saved: {}"),
    ("🔌 已删除上游: {}", "🔌 Upstream deleted: {}"),
    ("🧩 已保存模型: {}", "🧩 Model saved: {}"),
    ("🧩 已删除模型: {}", "🧩 Model deleted: {}"),
)

# full-width punctuation left between translated parts of a composed line
_PUNCTUATION = {"，": ", ", "：": ": ", "（": " (", "）": ")"}
# A value ends where PicGate's own full-width punctuation joins the parts of a composed line
# (values themselves are numbers, ids, sizes and upstream text, which uses ASCII punctuation).
_FIRST_VALUE = r"([^\s，（]+)"
_MIDDLE_VALUE = r"(.*?)"
_LAST_VALUE = r"([^，（）]*)"


def _pattern(zh: str) -> str:
    pieces = zh.split("{}")
    out = []
    for i, piece in enumerate(pieces):
        out.append(re.escape(piece))
        if i < len(pieces) - 1:
            if i == 0 and not piece:
                out.append(_FIRST_VALUE)
            elif not pieces[i + 1]:
                out.append(_LAST_VALUE)
            else:
                out.append(_MIDDLE_VALUE)
    return "".join(out)


@functools.cache
def _rules() -> tuple[tuple[re.Pattern[str], str], ...]:
    """Each Chinese template as a pattern (``{}`` a group), the longest literal first, so that
    a whole line's template wins over the shorter parts it may contain."""
    rules = []
    for zh, en in sorted(PHRASES, key=lambda pair: -len(pair[0].replace("{}", ""))):
        pieces = zh.split("{}")
        pattern = _pattern(zh)
        template = en.replace("\\", "\\\\")
        for n in range(1, len(pieces)):
            template = template.replace("{}", f"\\g<{n}>", 1)
        rules.append((re.compile(pattern, re.S), template))
    return tuple(rules)


def in_language(message: str, lang: str) -> str:
    """``message`` as the console shows it in ``lang``: unchanged for Chinese, else every known
    phrase in English (values and unknown text as they are)."""
    if lang == "zh":
        return message
    for pattern, template in _rules():
        message = pattern.sub(template, message)
    for zh, en in _PUNCTUATION.items():
        message = message.replace(zh, en)
    return message

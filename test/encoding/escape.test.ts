/** One escaping function per output format: what each must neutralise, value by value. */
import { HtmlRenderer, Parser } from 'commonmark';
import { describe, expect, it } from 'vitest';
import {
  annotationData,
  annotationProperty,
  escapeText,
  htmlText,
  markdownCode,
  markdownText,
  sarifUri,
} from '../../reconciler/encoding/escape.ts';

/** CommonMark's reference implementation: what a Markdown reader makes of our output. */
const render = (md: string) => new HtmlRenderer().render(new Parser().parse(md));
const escapeHtml = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

describe('escapeText (terminals and CI logs)', () => {
  it('shows control, bidi and invisible characters as escapes, and leaves the rest alone', () => {
    expect(escapeText('a\nb\rc\td')).toBe('a\\nb\\rc\\td');
    expect(escapeText('\u001b[31mred\u001b[0m')).toBe('\\x1b[31mred\\x1b[0m');
    expect(escapeText('\u0007\u007f\u0085\u009b')).toBe('\\x07\\x7f\\x85\\x9b');
    expect(escapeText('admin\u202e\u2066txt.yaml')).toBe('admin\\u202e\\u2066txt.yaml');
    expect(escapeText('a\u200bb\ufeff\u2028')).toBe('a\\u200bb\\ufeff\\u2028');
    expect(escapeText('spiffe://example.com/ns/é/π 🙂 100% `x` <b>')).toBe(
      'spiffe://example.com/ns/é/π 🙂 100% `x` <b>',
    );
  });

  it('keeps a value from starting a GitHub Actions workflow command', () => {
    expect(escapeText('::error file=x::forged')).toBe('\\x3a:error file=x::forged');
    expect(escapeText('  ::warning::x')).toBe('  \\x3a:warning::x');
    expect(escapeText('##[error]forged')).toBe('\\x23#[error]forged');
    expect(escapeText('a::b')).toBe('a::b');
    // A newline inside a value can no longer start a line of its own.
    expect(escapeText('x\n::error::forged')).toBe('x\\n::error::forged');
  });
});

describe('markdownCode', () => {
  it('fences with more backticks than the value holds, so the span cannot be closed from inside', () => {
    expect(markdownCode('plain')).toBe('`plain`');
    expect(markdownCode('a`b')).toBe('``a`b``');
    expect(markdownCode('x```y')).toBe('````x```y````');
    expect(markdownCode('`edge`')).toBe('`` `edge` ``');
    expect(markdownCode(' both ')).toBe('`  both  `');
    expect(markdownCode('')).toBe('` `');
  });

  it('keeps the span on one line: a blank line cannot end the paragraph', () => {
    expect(markdownCode('/bin/app`\n\n**pwned** @org/team')).toBe('``/bin/app`\\n\\n**pwned** @org/team``');
  });
});

describe('markdownText (prose)', () => {
  it('escapes every Markdown punctuation, HTML, mention, issue number and emoji shortcode', () => {
    expect(markdownText('**bold** _x_ [l](http://e) <img src=x> @org/team #1 :warning: | a')).toBe(
      '\\*\\*bold\\*\\* \\_x\\_ \\[l\\]\\(http\\:\\/\\/e\\) \\<img src\\=x\\> @&#8203;org\\/team \\#&#8203;1 \\:&#8203;warning\\: \\| a',
    );
    expect(markdownText('line\n\nnext')).toBe('line\\\\n\\\\nnext');
  });

  it('renders, through a CommonMark parser, as exactly the text it was given', () => {
    const hostile = '**bold** _x_ [l](http://e) <img src=x onerror=alert(1)> `code` ~~s~~ &amp; \\* | a';
    const html = render(markdownText(hostile));
    expect(html).toBe(`<p>${escapeHtml(hostile)}</p>\n`);
  });
});

describe('markdownCode through a CommonMark parser', () => {
  it('gives back the value in one code span, whatever backticks, blank lines or markup it holds', () => {
    for (const v of ['/bin/app`\n\n**@org/team** <b>x</b>', '``', '`a`', ' x ', 'a ``` b', '<!-- -->']) {
      const html = render(`- ${markdownCode(v)}`);
      const spans = [...html.matchAll(/<code>(.*?)<\/code>/gs)].map((m) => m[1]);
      expect(spans, JSON.stringify(v)).toEqual([escapeHtml(v.replace(/\n/g, '\\n'))]);
      expect(html).not.toMatch(/<(strong|em|b|img|a)\b/);
    }
  });
});

describe('htmlText', () => {
  it('turns markup into entities and neutralises mentions', () => {
    expect(htmlText('</summary><script>"x" & \'y\' @team')).toBe(
      '&lt;/summary&gt;&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39; @&#8203;team',
    );
  });
});

describe('GitHub annotations', () => {
  it('escapes data and properties as actions/toolkit does, after showing controls', () => {
    expect(annotationData('50% done\r\nnext')).toBe('50%25 done\\r\\nnext');
    expect(annotationData('message', 'hint: x')).toBe('message%0Ahint: x');
    expect(annotationData('\u001b[2J')).toBe('\\x1b[2J');
    expect(annotationProperty('team a/db#1 100%,x:y.yaml')).toBe('team a/db#1 100%25%2Cx%3Ay.yaml');
    expect(annotationProperty('a\nb')).toBe('a\\nb');
  });
});

describe('sarifUri', () => {
  it('percent-encodes each path segment, keeping the slashes', () => {
    expect(sarifUri('team a/db#1 100%.yaml')).toBe('team%20a/db%231%20100%25.yaml');
    expect(sarifUri("dir/it's (v2)*?.yaml")).toBe('dir/it%27s%20%28v2%29%2A%3F.yaml');
    expect(sarifUri('ünï/x\ny.yaml')).toBe('%C3%BCn%C3%AF/x%0Ay.yaml');
    expect(() => new URL(sarifUri('team a/db#1 100%.yaml'), 'file:///src/')).not.toThrow();
    expect(new URL(sarifUri('team a/db#1 100%.yaml'), 'file:///src/').hash).toBe('');
  });
});

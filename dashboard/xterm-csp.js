// xterm.js writes its theme and cell sizes into <style> elements, which the dashboard's strict
// Content-Security-Policy (style-src 'self', no inline style) blocks. Instead of a <style>, it
// gets an inert <loopsy-style> element whose text goes into a constructable stylesheet adopted
// by the document, which the policy allows. Import before xterm.js.
const create = Document.prototype.createElement;
Document.prototype.createElement = function createElement(name, options) {
  if (String(name).toLowerCase() !== 'style') return create.call(this, name, options);
  const element = create.call(this, 'loopsy-style');
  {
    const doc = this;
    const sheet = new CSSStyleSheet();
    doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
    let text = '';
    Object.defineProperty(element, 'textContent', {
      configurable: true,
      get() { return text; },
      set(value) { text = String(value ?? ''); sheet.replaceSync(text); },
    });
    // Dropping the element drops its rules.
    const remove = element.remove.bind(element);
    element.remove = () => { doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => s !== sheet); remove(); };
  }
  return element;
};

// A custom element holding a list of cards (ControlNet units, reference images): placing, removing and
// numbering them. Subclasses set `this.cards = []`, `this.list` (the cards' container) and `this.addButton`.

export class CardList extends HTMLElement {
  /** Append `card`, renumber, and focus its first `focusSelector` when the user just added it. */
  place(card, focusSelector, userAdded) {
    this.cards.push(card);
    this.list.append(card.el);
    this.renumber();
    if (userAdded) card.el.querySelector(focusSelector)?.focus();
    return card;
  }

  remove(card) {
    this.cards = this.cards.filter((c) => c !== card);
    card.el.remove();
    this.renumber();
    this.addButton.focus();
  }

  renumber() {
    this.cards.forEach((card, i) => card.setIndex(i));
  }
}

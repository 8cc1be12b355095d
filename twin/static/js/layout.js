// The layout around the map on any screen: the layer panel (beside the map on wide screens, a
// drawer over it on narrow ones, where it starts closed), the ⋯ menu that holds the tools and
// the time controls on phones, and room for a station's popup above its panel there.

// Keep these in step with the @media widths in viewer.css.
const narrow = window.matchMedia('(max-width: 900px)');
const phone = window.matchMedia('(max-width: 600px)');

export function setupLayout(map) {
  const body = document.body;
  const sidebar = document.getElementById('sidebar');
  const toggle = document.getElementById('toggle-sidebar');
  const menu = document.getElementById('menu-button');

  const syncSidebar = () => toggle.setAttribute('aria-expanded', getComputedStyle(sidebar).display !== 'none');
  const setMenu = open => {
    body.classList.toggle('menu-open', open);
    menu.setAttribute('aria-expanded', open);
  };

  // Two classes, because the panel's default differs: open on wide screens, closed on narrow ones.
  toggle.addEventListener('click', () => {
    body.classList.toggle(narrow.matches ? 'sidebar-open' : 'no-sidebar');
    syncSidebar();
    map.resize();
  });
  narrow.addEventListener('change', syncSidebar);
  syncSidebar();

  menu.addEventListener('click', () => setMenu(!body.classList.contains('menu-open')));
  document.getElementById('measure-button').addEventListener('click', () => setMenu(false));

  // Touching the map puts away what covers it.
  document.getElementById('map').addEventListener('pointerdown', () => {
    setMenu(false);
    if (narrow.matches && body.classList.contains('sidebar-open')) {
      body.classList.remove('sidebar-open');
      syncSidebar();
    }
  });
}

// On a phone the panel is a sheet over at most the lower 55% of the map (viewer.css): the picked
// point moves just above it, so its popup (which opens upwards) stays in view.
export function keepAbovePanel(map, lngLat) {
  if (!phone.matches) return;
  const height = map.getContainer().clientHeight;
  map.easeTo({center: lngLat, offset: [0, -0.08 * height], duration: 300});
}
